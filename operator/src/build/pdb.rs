//! The PodDisruptionBudget: voluntary disruptions take at most one storefront pod at a time
//! (never blocking a node drain, even with a single replica).

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{STOREFRONT, meta, selector};
use crate::tenant::ValidatedTenant;

pub fn pdb(tenant: &ValidatedTenant) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: meta(tenant, STOREFRONT),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector(&tenant.name)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}
