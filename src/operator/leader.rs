//! Leader election on a coordination.k8s.io Lease, so two replicas can run:
//! only the holder reconciles; the other waits and takes over when the
//! lease expires. Optimistic concurrency (resourceVersion) decides races.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::Client;

/// How long a lease stays valid without renewal.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often the holder renews (and a candidate retries).
pub const RENEW_INTERVAL: Duration = Duration::from_secs(5);

pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
}

impl Elector {
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str) -> Self {
        Elector { api: Api::namespaced(client, namespace), name: name.into(), identity: identity.into() }
    }

    fn spec(&self, now: Timestamp, transitions: i32, acquire: Option<MicroTime>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
            acquire_time: Some(acquire.unwrap_or(MicroTime(now))),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// Acquire the lease if free or expired, renew it if held. Ok(true) when
    /// this process holds it afterwards.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(self.name.clone()), ..Default::default() },
                spec: Some(self.spec(now, 0, None)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let ours = holder == self.identity;
        let duration = spec.lease_duration_seconds.unwrap_or(LEASE_DURATION.as_secs() as i32) as i64;
        let expired = spec.renew_time.as_ref().is_none_or(|t| t.0.as_second() + duration < now.as_second());
        if !ours && !holder.is_empty() && !expired {
            return Ok(false);
        }
        let transitions = spec.lease_transitions.unwrap_or(0) + if ours { 0 } else { 1 };
        lease.spec = Some(self.spec(now, transitions, if ours { spec.acquire_time } else { None }));
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Wait until this process holds the lease.
    pub async fn acquire(&self) {
        loop {
            match self.try_acquire_or_renew().await {
                Ok(true) => return,
                Ok(false) => tracing::debug!(lease = %self.name, "lease held by another replica; waiting"),
                Err(error) => tracing::warn!(lease = %self.name, %error, "lease acquire failed"),
            }
            tokio::time::sleep(RENEW_INTERVAL).await;
        }
    }

    /// Renew until a renewal fails for longer than the lease lasts; returns
    /// when leadership is lost (the caller must stop reconciling).
    pub async fn hold(&self) {
        let mut last_ok = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(RENEW_INTERVAL).await;
            match self.try_acquire_or_renew().await {
                Ok(true) => last_ok = tokio::time::Instant::now(),
                Ok(false) => {
                    tracing::warn!(lease = %self.name, "lease taken by another replica");
                    return;
                }
                Err(error) => {
                    tracing::warn!(lease = %self.name, %error, "lease renewal failed");
                    if last_ok.elapsed() > LEASE_DURATION - RENEW_INTERVAL {
                        return;
                    }
                }
            }
        }
    }

    /// Give the lease up on shutdown so a peer takes over at once.
    pub async fn release(&self) {
        if let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await {
            if lease.spec.as_ref().and_then(|s| s.holder_identity.as_deref()) == Some(&self.identity) {
                if let Some(s) = lease.spec.as_mut() {
                    s.holder_identity = None;
                    s.renew_time = None;
                }
                let _ = self.api.replace(&self.name, &PostParams::default(), &lease).await;
            }
        }
    }
}
