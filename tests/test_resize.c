#include "test.h"
#include "sluice.h"
TEST(placeholder) {}
static const sl_test_case cases[] = {SL_CASE(placeholder, "unit")};
SL_TEST_MAIN(cases)
