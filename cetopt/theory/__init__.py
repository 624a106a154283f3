"""The numerical proofs of the CET geometry (``cetopt prove``) and the compression-level study
(``cetopt levels``): checks as plain CheckResult data, reports in markdown with plots."""
