//! Exposing the storefront: the Route or Ingress, the router's grant to read the TLS Secret,
//! and `Routed` from what the router or ingress controller reports.

use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::ResourceExt;
use kube::api::{Api, DynamicObject};
use tiqzy_crds::conditions::{Reason, types};

use super::status::Observed;
use crate::apply::Applier;
use crate::build::{self, Exposure, ROUTER_ACCESS, RouterAccess};
use crate::context::Context;
use crate::error::Error;

/// Applies the exposure of the tenant in `ns` (or removes it while another Tenant holds one of
/// its hosts) and returns `Routed`.
pub async fn expose(
    applier: &Applier,
    ctx: &Context,
    ns: &str,
    exposure: Exposure,
    conflict: Option<&str>,
) -> Result<Observed, Error> {
    match (conflict, exposure) {
        (Some(other), _) => {
            remove_exposure(applier, ctx, ns).await?;
            Ok(Observed::failed(
                types::ROUTED,
                Reason::HostConflict,
                format!("a host is already served by Tenant {other}; this tenant is not routed"),
            ))
        }
        (None, Exposure::Ingress(ingress)) => {
            if ctx.route_api {
                router_access(applier, &ctx.client, ns, None).await?;
                applier
                    .prune_dynamic(ns, &build::route_api_resource(), &[])
                    .await?;
            }
            let ingress = applier.apply(*ingress).await?;
            Ok(routed_ingress(&ingress))
        }
        (None, Exposure::Route(routes, access)) => {
            router_access(applier, &ctx.client, ns, access.map(|a| *a)).await?;
            applier.prune::<Ingress>(ns, &[]).await?;
            let resource = build::route_api_resource();
            let names: Vec<String> = routes.iter().map(ResourceExt::name_any).collect();
            let mut applied = Vec::new();
            for route in routes {
                applied.push(applier.apply_dynamic(route, &resource).await?);
            }
            applier.prune_dynamic(ns, &resource, &names).await?;
            Ok(routed_routes(&applied))
        }
    }
}

async fn remove_exposure(applier: &Applier, ctx: &Context, ns: &str) -> Result<(), Error> {
    applier.prune::<Ingress>(ns, &[]).await?;
    if ctx.route_api {
        router_access(applier, &ctx.client, ns, None).await?;
        applier
            .prune_dynamic(ns, &build::route_api_resource(), &[])
            .await?;
    }
    Ok(())
}

/// Grants the OpenShift router read access to the Routes' TLS Secret, or takes it back.
async fn router_access(
    applier: &Applier,
    client: &kube::Client,
    ns: &str,
    access: Option<RouterAccess>,
) -> Result<(), Error> {
    let keep = match access {
        Some(RouterAccess { role, binding }) => {
            applier.apply_uncached(role).await?;
            applier.apply_uncached(binding).await?;
            vec![ROUTER_ACCESS.to_owned()]
        }
        None => Vec::new(),
    };
    applier
        .prune_listed(Api::<RoleBinding>::namespaced(client.clone(), ns), &keep)
        .await?;
    applier
        .prune_listed(Api::<Role>::namespaced(client.clone(), ns), &keep)
        .await
}

fn routed_ingress(ingress: &Ingress) -> Observed {
    let addresses = ingress
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(Vec::len)
        .unwrap_or(0);
    if addresses > 0 {
        Observed::ok(
            types::ROUTED,
            Reason::Admitted,
            "the ingress controller serves the storefront's hosts",
        )
    } else {
        Observed::failed(
            types::ROUTED,
            Reason::IngressCreated,
            "Ingress created; waiting for the ingress controller to report an address",
        )
    }
}

fn routed_routes(routes: &[DynamicObject]) -> Observed {
    let admitted = |route: &DynamicObject| {
        route.data["status"]["ingress"]
            .as_array()
            .is_some_and(|ingresses| {
                ingresses.iter().any(|i| {
                    i["conditions"].as_array().is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c["type"] == "Admitted" && c["status"] == "True")
                    })
                })
            })
    };
    let rejected = routes.iter().find(|r| {
        r.data["status"]["ingress"]
            .as_array()
            .is_some_and(|ingresses| {
                ingresses.iter().any(|i| {
                    i["conditions"].as_array().is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c["type"] == "Admitted" && c["status"] == "False")
                    })
                })
            })
    });
    if let Some(route) = rejected {
        return Observed::failed(
            types::ROUTED,
            Reason::HostConflict,
            format!("the router did not admit Route {}", route.name_any()),
        );
    }
    if routes.iter().all(admitted) {
        Observed::ok(
            types::ROUTED,
            Reason::Admitted,
            "the router admitted every Route",
        )
    } else {
        Observed::failed(
            types::ROUTED,
            Reason::RouteCreated,
            "Routes created; waiting for the router to admit them",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn route(conditions: serde_json::Value) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "route.openshift.io/v1", "kind": "Route",
            "metadata": { "name": "storefront-0", "namespace": "tiqzy-acme" },
            "status": { "ingress": [{ "routerName": "default", "conditions": conditions }] },
        }))
        .expect("route")
    }

    #[test]
    fn routes_are_routed_once_the_router_admits_every_one() {
        let admitted = route(json!([{ "type": "Admitted", "status": "True" }]));
        let waiting = route(json!([]));
        let rejected = route(json!([{ "type": "Admitted", "status": "False" }]));
        assert_eq!(
            routed_routes(std::slice::from_ref(&admitted)).reason,
            Reason::Admitted
        );
        let partly = routed_routes(&[admitted.clone(), waiting]);
        assert_eq!(partly.reason, Reason::RouteCreated);
        assert!(!partly.ok);
        let refused = routed_routes(&[admitted, rejected]);
        assert!(!refused.ok);
        assert_eq!(refused.reason, Reason::HostConflict);
    }

    #[test]
    fn an_ingress_is_routed_once_the_controller_reports_an_address() {
        let mut ingress: Ingress = serde_json::from_value(json!({
            "metadata": { "name": "storefront" },
        }))
        .expect("ingress");
        let waiting = routed_ingress(&ingress);
        assert_eq!(waiting.reason, Reason::IngressCreated);
        assert!(
            !waiting.ok,
            "Routed is False until the controller admits the hosts"
        );
        ingress.status = serde_json::from_value(json!({
            "loadBalancer": { "ingress": [{ "hostname": "router.local" }] },
        }))
        .expect("status");
        let admitted = routed_ingress(&ingress);
        assert_eq!(admitted.reason, Reason::Admitted);
        assert!(admitted.ok);
    }
}
