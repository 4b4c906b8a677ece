// duckdb_groupby.mjs -- the DuckDB side of bench/csv/run.sh: one group-by
// of a CSV file (plain or .zst) through @duckdb/node-api, written as CSV.
//
//   node duckdb_groupby.mjs IN OUT KEY THREADS
//
// Runs, in a fresh in-memory database with `threads` set to THREADS:
//   COPY (SELECT KEY, count(*), sum(x), avg(x), min(x), max(x)
//         FROM read_csv('IN') GROUP BY KEY ORDER BY KEY) TO 'OUT' (HEADER)
// read_csv detects the dialect and the column types itself and decompresses
// .zst by the file name, as a user would run it. The output has the same
// column order as sluice's csv_groupby.pipe (key, count, sum, mean, min,
// max), so check_groupby.py can compare the two. Prints the time of the
// query alone (without node's and DuckDB's start-up) as `query_s=SECONDS`.
import { DuckDBInstance } from '@duckdb/node-api';

const [inPath, outPath, key, threads] = process.argv.slice(2);
if (!inPath || !outPath || !key || !threads) {
  console.error('usage: node duckdb_groupby.mjs IN OUT KEY THREADS');
  process.exit(2);
}
// SQL string literal and identifier quoting (the paths come from run.sh, but
// a quote in a temporary folder's name must not break the statement).
const lit = (s) => `'${s.replaceAll("'", "''")}'`;
const ident = (s) => `"${s.replaceAll('"', '""')}"`;

const instance = await DuckDBInstance.create(':memory:', { threads: String(threads) });
const con = await instance.connect();
const k = ident(key);
const sql =
  `COPY (SELECT ${k}, count(*) AS "count", sum(x) AS "sum(x)", avg(x) AS "mean(x)", ` +
  `min(x) AS "min(x)", max(x) AS "max(x)" FROM read_csv(${lit(inPath)}) ` +
  `GROUP BY ${k} ORDER BY ${k}) TO ${lit(outPath)} (HEADER, DELIMITER ',')`;
const t0 = process.hrtime.bigint();
await con.run(sql);
const t1 = process.hrtime.bigint();
console.log(`query_s=${(Number(t1 - t0) / 1e9).toFixed(4)}`);
con.closeSync();
