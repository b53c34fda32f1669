//! The five kinds as the Kubernetes source reads them: one trait over the generated custom
//! resource types (`Company`, ..., `Goal`), so a watcher, a store and the rendering of a
//! resource into the YAML document the loader reads are written once, not five times.

use std::collections::BTreeMap;
use std::fmt::Debug;

use k8s_openapi::NamespaceResourceScope;
use kube::Resource;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::spec::kinds::{API_VERSION, Agent, Company, Computer, Goal, Product};
use crate::spec::schema::{Document, Kind, Metadata};

/// Annotations that are the API server's or `kubectl`'s bookkeeping, not the user's
/// declaration: left out of the rendered document (the last applied configuration repeats
/// the whole resource).
const BOOKKEEPING: [&str; 1] = ["kubectl.kubernetes.io/last-applied-configuration"];

/// A custom resource of one of the five kinds.
pub trait Declared:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Serialize
    + DeserializeOwned
    + Debug
    + Send
    + Sync
    + 'static
{
    const KIND: Kind;
    type Spec: Serialize;

    fn spec(&self) -> &Self::Spec;
}

macro_rules! declared {
    ($($ty:ident => $spec:ident),*) => {$(
        impl Declared for $ty {
            const KIND: Kind = Kind::$ty;
            type Spec = crate::spec::kinds::$spec;

            fn spec(&self) -> &Self::Spec {
                &self.spec
            }
        }
    )*};
}

declared!(
    Company => CompanySpec,
    Product => ProductSpec,
    Computer => ComputerSpec,
    Agent => AgentSpec,
    Goal => GoalSpec
);

/// A resource's identity within the namespace: its kind and name.
pub type Key = (Kind, String);

/// The path a resource is presented at in the source's tree (`goals/<name>.yaml`): where
/// the loader's messages say the problem is.
pub fn path(kind: Kind, name: &str) -> String {
    let folder = match kind {
        Kind::Company => "companies",
        Kind::Product => "products",
        Kind::Computer => "computers",
        Kind::Agent => "agents",
        Kind::Goal => "goals",
    };
    format!("{folder}/{name}.yaml")
}

/// The resource as a declaration document, the same YAML a file in git would hold: the
/// loader then reads and validates it exactly as it reads files.
pub fn render<K: Declared>(
    object: &K,
    spec: &K::Spec,
) -> Result<Vec<u8>, serde_saphyr::SerializeError> {
    let meta = object.meta();
    let annotations: BTreeMap<String, String> = meta
        .annotations
        .iter()
        .flatten()
        .filter(|(k, _)| !BOOKKEEPING.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let document = Document {
        api_version: API_VERSION.to_string(),
        kind: K::KIND.as_str().to_string(),
        metadata: Metadata {
            name: meta.name.clone().unwrap_or_default(),
            namespace: None,
            labels: meta.labels.clone().unwrap_or_default(),
            annotations,
        },
        spec,
    };
    serde_saphyr::to_string(&document).map(String::into_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::kinds::GoalSpec;

    #[test]
    fn a_resource_renders_as_the_document_a_file_would_hold() {
        let mut goal = Goal::new(
            "hello",
            GoalSpec {
                product: "app".into(),
                owner: "ceo".into(),
                description: "hello.txt exists.".into(),
                ..GoalSpec::default()
            },
        );
        goal.metadata.annotations = Some(BTreeMap::from([
            (BOOKKEEPING[0].to_string(), "{}".to_string()),
            ("team".to_string(), "core".to_string()),
        ]));
        let text = String::from_utf8(render(&goal, goal.spec()).unwrap()).unwrap();
        assert!(text.contains("apiVersion: proto.dev/v1alpha1"), "{text}");
        assert!(text.contains("kind: Goal"), "{text}");
        assert!(text.contains("team: core"), "{text}");
        assert!(!text.contains("last-applied"), "{text}");
        assert_eq!(path(Kind::Goal, "hello"), "goals/hello.yaml");
    }
}
