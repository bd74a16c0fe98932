//! Weir custom resource definitions. The specs arrive with issue 7; this crate is an empty library until then.
