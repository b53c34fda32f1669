//! JSON Schemas for editors and the shape checker, and CRDs for Kubernetes, all generated
//! from the Rust types so that the three can never disagree.

use std::collections::BTreeMap;

use kube::CustomResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};

use super::kinds::{
    API_VERSION, Agent, AgentSpec, Company, CompanySpec, Computer, ComputerSpec, Goal, GoalSpec,
    Product, ProductSpec,
};

/// The kinds, in the order they are listed and applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Company,
    Product,
    Computer,
    Agent,
    Goal,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Company,
        Kind::Product,
        Kind::Computer,
        Kind::Agent,
        Kind::Goal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Company => "Company",
            Kind::Product => "Product",
            Kind::Computer => "Computer",
            Kind::Agent => "Agent",
            Kind::Goal => "Goal",
        }
    }

    /// Case-insensitive, and accepts plurals as `kubectl` does (`goals`, `agent`).
    pub fn parse(name: &str) -> Option<Kind> {
        let lower = name.to_ascii_lowercase();
        let singular = lower.strip_suffix('s').unwrap_or(&lower);
        Kind::ALL.into_iter().find(|k| {
            k.as_str().to_ascii_lowercase() == lower || k.as_str().to_ascii_lowercase() == singular
        })
    }

    /// The file name of the kind's editor schema under `crds/schema/`.
    pub fn schema_file(self) -> String {
        format!("{}.json", self.as_str().to_ascii_lowercase())
    }
}

/// The metadata users write in files: a subset of Kubernetes `ObjectMeta`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metadata {
    /// A lower-case DNS label, unique within its kind.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// One declaration document as written in a file.
#[derive(Serialize, Deserialize, Clone, Debug, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Document<S> {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: S,
}

/// The JSON Schema (2020-12) of a kind's documents, with `apiVersion` and `kind` pinned.
pub fn document_schema(kind: Kind) -> Json {
    let schema = match kind {
        Kind::Company => schemars::schema_for!(Document<CompanySpec>),
        Kind::Product => schemars::schema_for!(Document<ProductSpec>),
        Kind::Computer => schemars::schema_for!(Document<ComputerSpec>),
        Kind::Agent => schemars::schema_for!(Document<AgentSpec>),
        Kind::Goal => schemars::schema_for!(Document<GoalSpec>),
    };
    let mut schema = schema.to_value();
    if let Some(obj) = schema.as_object_mut() {
        obj.insert(
            "$id".into(),
            json!(format!(
                "https://proto.dev/schema/v1alpha1/{}",
                kind.schema_file()
            )),
        );
        obj.insert("title".into(), json!(kind.as_str()));
        if let Some(props) = obj.get_mut("properties").and_then(Json::as_object_mut) {
            props.insert("apiVersion".into(), json!({ "const": API_VERSION }));
            props.insert("kind".into(), json!({ "const": kind.as_str() }));
        }
    }
    schema
}

/// The CustomResourceDefinition of a kind.
pub fn crd(
    kind: Kind,
) -> k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition {
    let mut crd = match kind {
        Kind::Company => Company::crd(),
        Kind::Product => Product::crd(),
        Kind::Computer => Computer::crd(),
        Kind::Agent => Agent::crd(),
        Kind::Goal => Goal::crd(),
    };
    for version in &mut crd.spec.versions {
        if let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        {
            drop_empty_string_defaults(schema);
        }
    }
    crd
}

/// Removes `default: ""` throughout a schema. API servers before 1.21 read an empty string
/// default as null and refuse the whole CRD ("must be of type string"); an absent string
/// field and an empty one mean the same to the loader, so nothing is lost.
fn drop_empty_string_defaults(
    schema: &mut k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaProps,
) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
        JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
    };
    if schema.default.as_ref().is_some_and(|d| d.0 == json!("")) {
        schema.default = None;
    }
    let mut children: Vec<&mut _> = Vec::new();
    if let Some(properties) = schema.properties.as_mut() {
        children.extend(properties.values_mut());
    }
    match schema.items.as_mut() {
        Some(JSONSchemaPropsOrArray::Schema(item)) => children.push(item.as_mut()),
        Some(JSONSchemaPropsOrArray::Schemas(items)) => children.extend(items.iter_mut()),
        None => {}
    }
    if let Some(JSONSchemaPropsOrBool::Schema(extra)) = schema.additional_properties.as_mut() {
        children.push(extra.as_mut());
    }
    for list in [&mut schema.all_of, &mut schema.any_of, &mut schema.one_of] {
        if let Some(list) = list.as_mut() {
            children.extend(list.iter_mut());
        }
    }
    for child in children {
        drop_empty_string_defaults(child);
    }
}

/// All CRDs as one multi-document YAML stream, as `proto crds` prints and `crds/` holds.
pub fn crds_yaml() -> Result<String, serde_saphyr::SerializeError> {
    let mut out = String::new();
    for kind in Kind::ALL {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(&crd(kind))?);
    }
    Ok(out)
}

/// The CRD of one kind as YAML (the file `crds/<kind>.yaml`).
pub fn crd_yaml(kind: Kind) -> Result<String, serde_saphyr::SerializeError> {
    serde_saphyr::to_string(&crd(kind))
}
