//! The end-to-end suite: one test binary that drives the real `modelvault`
//! binary and the real server on ephemeral ports, over a local store and a
//! real S3 server (moto, started by scripts/test.sh).

mod access;
mod audit;
mod circuit;
mod cli_daily;
mod common;
mod connections;
mod examples;
mod forgery;
mod governance;
mod hostile;
mod identity;
mod keyring_race;
mod keys;
mod metadata;
mod monitoring;
mod openapi;
mod policy;
mod policy_loading;
mod replicas;
mod rollback;
mod roundtrip;
mod s3;
mod smaller;
mod tamper;
