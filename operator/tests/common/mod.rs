#![allow(dead_code)]
pub mod brokers;
pub mod fake_admin;
pub mod mock_api;
