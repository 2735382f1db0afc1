//! The real server on 127.0.0.1, driven over HTTP, with the real Claude Code CLI and the
//! scripted model server. One binary so the suite links once.

// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod api;
mod browser;
mod browser_actions;
mod browser_attacks;
mod browser_driver;
mod cluster;
mod cluster_clocks;
mod cluster_crash;
mod cluster_news;
mod cluster_outage;
mod cluster_pinning;
mod cluster_signals;
mod cluster_watch;
mod console;
mod edges;
mod events;
mod hardening;
mod helpers;
mod lifecycle;
mod nodes;
mod openapi;
mod permissions;
mod scheduling;
mod schema;
mod turns;
mod usability;
mod workdirs;
