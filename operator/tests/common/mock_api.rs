//! kube-rs's mock-client pattern (tower-test): a `kube::Client` whose HTTP service is a test
//! double of the Kubernetes API server. Every request is recorded and answered like the API
//! server would for the calls the reconcilers make (Events, status and finalizer patches).

use std::sync::{Arc, Mutex};

use http::{Request, Response};
use kube::client::Body;
use serde_json::{json, Value};

/// One request the reconciler sent to the API server.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub body: Value,
}

impl Recorded {
    /// The reason of an Event creation, if this is one.
    pub fn event_reason(&self) -> Option<&str> {
        (self.method == "POST" && self.path.starts_with("/apis/events.k8s.io/"))
            .then(|| self.body["reason"].as_str().unwrap_or(""))
    }
    pub fn event_type(&self) -> Option<&str> {
        self.event_reason().map(|_| self.body["type"].as_str().unwrap_or(""))
    }
    pub fn is_status_patch(&self) -> bool {
        self.method == "PATCH" && self.path.contains("/status")
    }
    pub fn is_object_patch(&self) -> bool {
        self.method == "PATCH" && !self.path.contains("/status") && !self.path.starts_with("/apis/events.k8s.io/")
    }
}

pub struct MockApi {
    pub client: kube::Client,
    pub recorded: Arc<Mutex<Vec<Recorded>>>,
    task: tokio::task::JoinHandle<()>,
}

impl MockApi {
    /// `object` is what the API server returns for PATCHes of the resource (its current JSON).
    pub fn new(object: Value) -> Self {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let recorded = Arc::new(Mutex::new(Vec::new()));
        let rec = recorded.clone();
        let task = tokio::spawn(async move {
            while let Some((request, send)) = handle.next_request().await {
                let method = request.method().to_string();
                let path = request.uri().path().to_string();
                let bytes = request.into_body().collect_bytes().await.unwrap();
                let body: Value = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
                let answer = if path.starts_with("/apis/events.k8s.io/") {
                    // Echo the Event back, as the API server does on create.
                    body.clone()
                } else if path.ends_with("/status") {
                    let mut o = object.clone();
                    if let Some(status) = body.get("status") {
                        o["status"] = status.clone();
                    }
                    o
                } else {
                    object.clone()
                };
                rec.lock().unwrap().push(Recorded { method, path, body });
                send.send_response(
                    Response::builder().status(200).body(Body::from(serde_json::to_vec(&answer).unwrap())).unwrap(),
                );
            }
        });
        MockApi { client: kube::Client::new(service, "default"), recorded, task }
    }

    pub fn recorded(&self) -> Vec<Recorded> {
        self.recorded.lock().unwrap().clone()
    }

    pub fn events(&self) -> Vec<(String, String)> {
        self.recorded()
            .iter()
            .filter_map(|r| r.event_reason().map(|reason| (r.event_type().unwrap().to_string(), reason.to_string())))
            .collect()
    }

    /// The last status written, or None.
    pub fn last_status(&self) -> Option<Value> {
        self.recorded().iter().rev().find(|r| r.is_status_patch()).map(|r| r.body["status"].clone())
    }

    pub fn abort(&self) {
        self.task.abort();
    }
}

/// `.status.conditions[type]` as (status, reason).
pub fn condition(status: &Value, type_: &str) -> (String, String) {
    let c = status["conditions"]
        .as_array()
        .unwrap_or_else(|| panic!("no conditions in {status}"))
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {status}"))
        .clone();
    (c["status"].as_str().unwrap().to_string(), c["reason"].as_str().unwrap().to_string())
}

/// A resource JSON with the operator's finalizer (as after the first reconcile).
pub fn resource(kind: &str, name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "weir.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": name, "namespace": "default", "uid": "0f1e2d3c", "generation": 1,
                     "resourceVersion": "7", "finalizers": ["weir.dev/broker-object"]},
        "spec": spec
    })
}

/// The same resource, being deleted.
pub fn deleting(mut obj: Value) -> Value {
    obj["metadata"]["deletionTimestamp"] = json!("2026-11-25T18:00:00Z");
    obj
}
