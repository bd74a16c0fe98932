//! The Weir operator. Its controllers arrive with issue 7; this crate is an empty library until then.
