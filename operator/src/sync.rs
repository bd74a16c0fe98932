//! The broker side of reconciling: what each kind's `sync` and `remove` report back to the
//! Kubernetes side (conditions, Events, status), independent of Kubernetes itself.

/// One change made on the broker; each becomes a Normal Event on the resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// CamelCase Event reason (`Created`, `Updated`, `Deleted`, ...).
    pub reason: &'static str,
    /// What changed, for people.
    pub note: String,
}

impl Change {
    pub fn new(reason: &'static str, note: impl Into<String>) -> Self {
        Change { reason, note: note.into() }
    }
}

/// Whether the broker object matches the spec after a sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Exists and matches the spec.
    Ready { reason: &'static str, message: String },
    /// Exists but differs in a way the operator cannot fix in place, or is waiting for something
    /// (a missing source exchange, ...). Not an error of the request: it is reported, not retried hot.
    NotReady { reason: &'static str, message: String },
    /// Not there yet, but getting there on its own (a reassignment moving data): reported
    /// without a Warning and looked at again soon.
    Progressing { reason: &'static str, message: String },
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        matches!(self, Readiness::Ready { .. })
    }
}

/// Result of one sync of one resource against the broker.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncOutcome {
    pub readiness: Readiness,
    pub changes: Vec<Change>,
    /// Kind-specific status fields (merged into `.status`), e.g. a topic's id and partitions.
    pub status_fields: serde_json::Map<String, serde_json::Value>,
}

impl SyncOutcome {
    pub fn ready(changes: Vec<Change>) -> Self {
        SyncOutcome {
            readiness: Readiness::Ready { reason: "InSync", message: "the broker object matches the spec".to_string() },
            changes,
            status_fields: serde_json::Map::new(),
        }
    }

    pub fn progressing(reason: &'static str, message: impl Into<String>, changes: Vec<Change>) -> Self {
        SyncOutcome {
            readiness: Readiness::Progressing { reason, message: message.into() },
            changes,
            status_fields: serde_json::Map::new(),
        }
    }

    pub fn not_ready(reason: &'static str, message: impl Into<String>, changes: Vec<Change>) -> Self {
        SyncOutcome {
            readiness: Readiness::NotReady { reason, message: message.into() },
            changes,
            status_fields: serde_json::Map::new(),
        }
    }
}

/// Result of removing the broker object when the resource is deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removal {
    /// Deleted now.
    Deleted(Change),
    /// Was not there (deleted behind the operator's back, or never created).
    AlreadyGone,
    /// Refused by a guard the user asked for (`deleteIfEmpty`, `deleteIfUnused`): the resource
    /// keeps its finalizer and the deletion is retried.
    Blocked { reason: &'static str, message: String },
}
