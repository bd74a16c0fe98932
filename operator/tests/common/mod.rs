#![allow(dead_code)]
pub mod fake_admin;
pub mod mock_api;
