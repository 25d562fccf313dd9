//! The HorizontalPodAutoscaler between the tenant's replica bounds; none while suspended.

use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};

use super::{STOREFRONT, meta};
use crate::tenant::ValidatedTenant;

pub fn hpa(tenant: &ValidatedTenant) -> Option<HorizontalPodAutoscaler> {
    let storefront = &tenant.spec.storefront;
    if storefront.suspended {
        return None;
    }
    let utilisation = |resource: &str, percent: i32| MetricSpec {
        type_: "Resource".to_owned(),
        resource: Some(ResourceMetricSource {
            name: resource.to_owned(),
            target: MetricTarget {
                type_: "Utilization".to_owned(),
                average_utilization: Some(percent),
                ..MetricTarget::default()
            },
        }),
        ..MetricSpec::default()
    };
    Some(HorizontalPodAutoscaler {
        metadata: meta(tenant, STOREFRONT),
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".to_owned()),
                kind: "Deployment".to_owned(),
                name: STOREFRONT.to_owned(),
            },
            min_replicas: Some(storefront.replicas.min),
            max_replicas: storefront.replicas.max,
            metrics: Some(vec![utilisation("cpu", 75), utilisation("memory", 80)]),
            ..HorizontalPodAutoscalerSpec::default()
        }),
        ..HorizontalPodAutoscaler::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixture;

    #[test]
    fn bounds_come_from_the_spec_and_suspension_removes_the_autoscaler() {
        let mut tenant = fixture::tenant("acme");
        tenant.spec.storefront.replicas.min = 2;
        tenant.spec.storefront.replicas.max = 7;
        let spec = hpa(&fixture::validated(&tenant))
            .expect("hpa")
            .spec
            .expect("spec");
        assert_eq!((spec.min_replicas, spec.max_replicas), (Some(2), 7));
        tenant.spec.storefront.suspended = true;
        assert!(hpa(&fixture::validated(&tenant)).is_none());
    }
}
