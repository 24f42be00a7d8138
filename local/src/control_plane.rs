//! Two behaviours of Lambda's control plane that moto leaves out and Sluice
//! depends on: function states, and the account's request quota.
//!
//! Function states, as <https://docs.aws.amazon.com/lambda/latest/dg/functions-states.html>
//! documents them: after `CreateFunction` a function is `Pending` before
//! `Active`, and invocations and other API actions on it fail; after
//! `UpdateFunctionCode` or `UpdateFunctionConfiguration` its
//! `LastUpdateStatus` is `InProgress` before `Successful`, and during that
//! window `UpdateFunctionCode`, `UpdateFunctionConfiguration` and
//! `PublishVersion` fail with `ResourceConflictException`. A published version
//! starts `Pending` too (the `PublishedVersionActive` waiter exists for it).
//! The windows last seconds, with jitter, scaled like every other time of the
//! local stack (`--schedule-scale`).
//!
//! The quota, as <https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html#api-requests>
//! states it: control-plane requests (every Lambda API request but invocation,
//! `GetFunction` and `GetPolicy`) share 15 requests per second per account
//! and Region, which cannot be raised; `GetFunction` has 100 per second and
//! `GetPolicy` 15. Beyond it Lambda answers 429 `TooManyRequestsException`
//! with reason `CallerRateLimitExceeded`. Rates are requests per real second:
//! they are not scaled.

use rand::Rng;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What starts a state window, with its realistic length before scaling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// `CreateFunction`: `Pending` until `Active`.
    Create,
    /// `UpdateFunctionCode` or `UpdateFunctionConfiguration`: `InProgress`
    /// until `Successful`.
    Update,
    /// `PublishVersion`: the new version `Pending` until `Active`.
    Publish,
}

impl Transition {
    /// Seconds the window lasts on Lambda for a zip function outside a VPC:
    /// a second or a few, never zero.
    fn seconds(self) -> std::ops::Range<f64> {
        match self {
            Transition::Create => 1.0..2.5,
            Transition::Update => 1.0..3.0,
            Transition::Publish => 0.3..1.0,
        }
    }
}

/// A function's (or version's) state fields as `GetFunctionConfiguration` reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub state: &'static str,
    pub state_reason_code: Option<&'static str>,
    pub last_update_status: &'static str,
    pub last_update_reason_code: Option<&'static str>,
}

const ACTIVE: Status = Status {
    state: "Active",
    state_reason_code: None,
    last_update_status: "Successful",
    last_update_reason_code: None,
};

#[derive(Default)]
struct Windows {
    pending_until: Option<Instant>,
    updating_until: Option<Instant>,
    /// Versions published through sluice-local, `Pending` until then.
    versions: HashMap<String, Instant>,
    /// An update accepted and not yet answered (`UpdateClaim`): its window
    /// starts when it is answered, and nothing else may change the
    /// function meanwhile.
    claimed: bool,
}

/// An update of a function claimed before it is made: while it is held, any
/// other change of the function is refused as one made during an update.
/// Dropped once the update is answered, by which time `begin` has opened
/// the update's window if it was accepted.
pub struct UpdateClaim<'a> {
    states: &'a FunctionStates,
    function: String,
}

impl Drop for UpdateClaim<'_> {
    fn drop(&mut self) {
        let mut windows = self.states.windows.lock().expect("states lock");
        if let Some(w) = windows.get_mut(&self.function) {
            w.claimed = false;
        }
    }
}

/// The state windows of the functions created and changed through sluice-local.
pub struct FunctionStates {
    scale: f64,
    windows: Mutex<HashMap<String, Windows>>,
}

fn open(until: Option<Instant>, now: Instant) -> bool {
    until.is_some_and(|u| u > now)
}

impl FunctionStates {
    pub fn new(scale: f64) -> Self {
        FunctionStates {
            scale,
            windows: Mutex::new(HashMap::new()),
        }
    }

    fn window(&self, transition: Transition) -> Duration {
        let secs = rand::rng().random_range(transition.seconds());
        Duration::from_secs_f64(secs * self.scale)
    }

    /// Records a transition that Lambda accepted; `version` names the
    /// version a `Publish` made.
    pub fn begin(&self, function: &str, transition: Transition, version: Option<&str>) {
        let until = Instant::now() + self.window(transition);
        let mut windows = self.windows.lock().expect("states lock");
        let w = windows.entry(function.to_owned()).or_default();
        match (transition, version) {
            (Transition::Create, _) => {
                *w = Windows {
                    pending_until: Some(until),
                    ..Windows::default()
                }
            }
            (Transition::Update, _) => w.updating_until = Some(until),
            (Transition::Publish, Some(v)) => {
                w.versions.insert(v.to_owned(), until);
            }
            (Transition::Publish, None) => {}
        }
    }

    pub fn forget(&self, function: &str) {
        self.windows.lock().expect("states lock").remove(function);
    }

    pub fn clear(&self) {
        self.windows.lock().expect("states lock").clear();
    }

    /// Why Lambda refuses to change `function` now (`ResourceConflictException`),
    /// if it does: while it is `Pending`, or an update is in progress.
    pub fn update_conflict(&self, function: &str, function_arn: &str) -> Option<String> {
        let windows = self.windows.lock().expect("states lock");
        conflict(windows.get(function)?, function_arn, Instant::now())
    }

    /// Claims `function` for an update, or says why Lambda refuses one now:
    /// the check and the claim are one step, so of two updates sent at once
    /// one is refused, as Lambda refuses it.
    pub fn claim_update(
        &self,
        function: &str,
        function_arn: &str,
    ) -> Result<UpdateClaim<'_>, String> {
        let mut windows = self.windows.lock().expect("states lock");
        let w = windows.entry(function.to_owned()).or_default();
        if let Some(why) = conflict(w, function_arn, Instant::now()) {
            return Err(why);
        }
        w.claimed = true;
        Ok(UpdateClaim {
            states: self,
            function: function.to_owned(),
        })
    }

    /// Whether an update of the function is in progress now.
    pub fn updating(&self, function: &str) -> bool {
        let windows = self.windows.lock().expect("states lock");
        windows
            .get(function)
            .is_some_and(|w| open(w.updating_until, Instant::now()))
    }

    /// Why an invocation of `version` fails now, if it does: the function or
    /// that version is `Pending`. An update in progress does not stop one.
    pub fn invoke_conflict(&self, function: &str, version: &str) -> Option<String> {
        let now = Instant::now();
        let windows = self.windows.lock().expect("states lock");
        let w = windows.get(function)?;
        let pending =
            open(w.pending_until, now) || w.versions.get(version).is_some_and(|until| *until > now);
        pending.then(pending_message)
    }

    /// The state fields of `version` (`$LATEST` for the function itself).
    pub fn status(&self, function: &str, version: &str) -> Status {
        let now = Instant::now();
        let windows = self.windows.lock().expect("states lock");
        let Some(w) = windows.get(function) else {
            return ACTIVE;
        };
        if version == "$LATEST" {
            if open(w.pending_until, now) {
                return Status {
                    state: "Pending",
                    state_reason_code: Some("Creating"),
                    ..ACTIVE
                };
            }
            if open(w.updating_until, now) {
                return Status {
                    last_update_status: "InProgress",
                    last_update_reason_code: Some("Creating"),
                    ..ACTIVE
                };
            }
        } else if w.versions.get(version).is_some_and(|until| *until > now) {
            return Status {
                state: "Pending",
                state_reason_code: Some("Creating"),
                ..ACTIVE
            };
        }
        ACTIVE
    }
}

fn conflict(w: &Windows, function_arn: &str, now: Instant) -> Option<String> {
    if open(w.pending_until, now) {
        Some(pending_message())
    } else if w.claimed || open(w.updating_until, now) {
        Some(format!(
            "The operation cannot be performed at this time. An update is in progress for resource: {function_arn}"
        ))
    } else {
        None
    }
}

fn pending_message() -> String {
    "The operation cannot be performed at this time. The function is currently in the following state: Pending".to_owned()
}

/// Puts `status` into a function configuration as Lambda returns it.
pub fn apply_status(config: &mut serde_json::Value, status: &Status) {
    let Some(config) = config.as_object_mut() else {
        return;
    };
    let reason = |code: Option<&str>| match code {
        Some(_) => serde_json::json!("The function is being created."),
        None => serde_json::Value::Null,
    };
    config.insert("State".into(), status.state.into());
    config.insert("StateReasonCode".into(), status.state_reason_code.into());
    config.insert("StateReason".into(), reason(status.state_reason_code));
    config.insert("LastUpdateStatus".into(), status.last_update_status.into());
    config.insert(
        "LastUpdateStatusReasonCode".into(),
        status.last_update_reason_code.into(),
    );
    config.insert(
        "LastUpdateStatusReason".into(),
        reason(status.last_update_reason_code),
    );
    config.retain(|_, v| !v.is_null());
}

/// Which of Lambda's request quotas a request counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    ControlPlane,
    GetFunction,
    GetPolicy,
    /// Invocations, and sluice-local's and moto's own endpoints.
    Uncounted,
}

impl Api {
    /// Sorts a request by its method and path segments.
    pub fn of(method: &http::Method, segments: &[&str]) -> Api {
        match (method, segments) {
            (_, ["_sluice", ..] | ["moto-api", ..]) => Api::Uncounted,
            // Invoke, InvokeAsync and InvokeWithResponseStream.
            (
                &http::Method::POST,
                [
                    _,
                    "functions",
                    _,
                    "invocations" | "invoke-async" | "response-streaming-invocations",
                    ..,
                ],
            ) => Api::Uncounted,
            (&http::Method::GET, ["2015-03-31", "functions", _]) => Api::GetFunction,
            (&http::Method::GET, ["2015-03-31", "functions", _, "policy"]) => Api::GetPolicy,
            _ => Api::ControlPlane,
        }
    }
}

/// Every name `operation` gives a request it knows.
pub const OPERATIONS: &[&str] = &[
    "ListFunctions",
    "CreateFunction",
    "GetFunction",
    "DeleteFunction",
    "Invoke",
    "GetFunctionConfiguration",
    "UpdateFunctionConfiguration",
    "UpdateFunctionCode",
    "PublishVersion",
    "ListVersionsByFunction",
    "CreateAlias",
    "ListAliases",
    "GetAlias",
    "UpdateAlias",
    "DeleteAlias",
    "GetPolicy",
    "AddPermission",
    "GetFunctionEventInvokeConfig",
    "PutFunctionEventInvokeConfig",
    "UpdateFunctionEventInvokeConfig",
    "DeleteFunctionEventInvokeConfig",
    "ListFunctionEventInvokeConfigs",
];

/// The Lambda operation a request is, by its method and path segments (the
/// names of the Lambda API reference), for the counts by operation; one
/// of `OPERATIONS`, or `Other`.
pub fn operation(method: &http::Method, segments: &[&str]) -> &'static str {
    use http::Method;
    let m = method.clone();
    match segments {
        [_, "functions"] | [_, "functions", ""] if m == Method::GET => "ListFunctions",
        [_, "functions"] | [_, "functions", ""] if m == Method::POST => "CreateFunction",
        [_, "functions", _] if m == Method::GET => "GetFunction",
        [_, "functions", _] if m == Method::DELETE => "DeleteFunction",
        [
            _,
            "functions",
            _,
            "invocations" | "invoke-async" | "response-streaming-invocations",
            ..,
        ] => "Invoke",
        [_, "functions", _, "configuration"] if m == Method::GET => "GetFunctionConfiguration",
        [_, "functions", _, "configuration"] if m == Method::PUT => "UpdateFunctionConfiguration",
        [_, "functions", _, "code"] if m == Method::PUT => "UpdateFunctionCode",
        [_, "functions", _, "versions"] if m == Method::POST => "PublishVersion",
        [_, "functions", _, "versions"] if m == Method::GET => "ListVersionsByFunction",
        [_, "functions", _, "aliases"] if m == Method::POST => "CreateAlias",
        [_, "functions", _, "aliases"] if m == Method::GET => "ListAliases",
        [_, "functions", _, "aliases", _] if m == Method::GET => "GetAlias",
        [_, "functions", _, "aliases", _] if m == Method::PUT => "UpdateAlias",
        [_, "functions", _, "aliases", _] if m == Method::DELETE => "DeleteAlias",
        [_, "functions", _, "policy"] if m == Method::GET => "GetPolicy",
        [_, "functions", _, "policy"] if m == Method::POST => "AddPermission",
        [_, "functions", _, "event-invoke-config"] if m == Method::GET => {
            "GetFunctionEventInvokeConfig"
        }
        [_, "functions", _, "event-invoke-config"] if m == Method::PUT => {
            "PutFunctionEventInvokeConfig"
        }
        [_, "functions", _, "event-invoke-config"] if m == Method::POST => {
            "UpdateFunctionEventInvokeConfig"
        }
        [_, "functions", _, "event-invoke-config"] if m == Method::DELETE => {
            "DeleteFunctionEventInvokeConfig"
        }
        [_, "functions", _, "event-invoke-config", "list"] => "ListFunctionEventInvokeConfigs",
        _ => "Other",
    }
}

/// The documented rates, requests per second.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Rates {
    pub control_plane: f64,
    pub get_function: f64,
    pub get_policy: f64,
}

impl Default for Rates {
    fn default() -> Self {
        Rates {
            control_plane: 15.0,
            get_function: 100.0,
            get_policy: 15.0,
        }
    }
}

/// A token bucket holding at most a second's worth of requests.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: f64, now: Instant) -> Self {
        Bucket {
            rate,
            tokens: rate,
            at: now,
        }
    }

    /// Takes a token, or says how long until one is there.
    fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }
}

/// How many requests of each quota were let through and throttled.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Counts {
    pub allowed: u64,
    pub throttled: u64,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct QuotaReport {
    pub control_plane: Counts,
    pub get_function: Counts,
    pub get_policy: Counts,
    /// The counted requests again, by Lambda operation (`operation`): what
    /// a deployment spends its quota on.
    pub by_operation: std::collections::BTreeMap<&'static str, Counts>,
}

/// Lambda's request quotas for the whole account, all callers together.
pub struct Quota {
    rates: Mutex<Rates>,
    inner: Mutex<(Vec<Bucket>, QuotaReport)>,
}

impl Quota {
    pub fn new(rates: Rates) -> Self {
        let now = Instant::now();
        let buckets = vec![
            Bucket::new(rates.control_plane, now),
            Bucket::new(rates.get_function, now),
            Bucket::new(rates.get_policy, now),
        ];
        Quota {
            rates: Mutex::new(rates),
            inner: Mutex::new((buckets, QuotaReport::default())),
        }
    }

    pub fn rates(&self) -> Rates {
        *self.rates.lock().expect("quota lock")
    }

    /// Holds one quota (the control plane's or `GetFunction`'s) to another
    /// rate from now on (tests set up a stack at AWS's rates, then squeeze
    /// one); the counts go on.
    pub fn set_rate(&self, api: Api, rate: f64) {
        let mut rates = self.rates.lock().expect("quota lock");
        let (slot, bucket) = match api {
            Api::ControlPlane => (&mut rates.control_plane, 0),
            Api::GetFunction => (&mut rates.get_function, 1),
            Api::GetPolicy => (&mut rates.get_policy, 2),
            Api::Uncounted => return,
        };
        *slot = rate;
        let mut inner = self.inner.lock().expect("quota lock");
        inner.0[bucket] = Bucket::new(rate, Instant::now());
    }

    /// Counts a request (`api`'s quota, as `operation`); `Err` with the
    /// wait Lambda would advise if it is over the quota.
    pub fn admit(&self, api: Api, operation: &'static str) -> Result<(), Duration> {
        self.admit_at(api, operation, Instant::now())
    }

    fn admit_at(&self, api: Api, operation: &'static str, now: Instant) -> Result<(), Duration> {
        let mut inner = self.inner.lock().expect("quota lock");
        let (buckets, report) = &mut *inner;
        let (bucket, counts) = match api {
            Api::Uncounted => return Ok(()),
            Api::ControlPlane => (&mut buckets[0], &mut report.control_plane),
            Api::GetFunction => (&mut buckets[1], &mut report.get_function),
            Api::GetPolicy => (&mut buckets[2], &mut report.get_policy),
        };
        let taken = bucket.take(now);
        let by_operation = report.by_operation.entry(operation).or_default();
        for counts in [counts, by_operation] {
            match taken {
                Ok(()) => counts.allowed += 1,
                Err(_) => counts.throttled += 1,
            }
        }
        taken
    }

    pub fn report(&self) -> QuotaReport {
        self.inner.lock().expect("quota lock").1.clone()
    }

    /// Starts counting afresh, with full buckets.
    pub fn reset(&self) {
        let fresh = Quota::new(self.rates());
        *self.inner.lock().expect("quota lock") = fresh.inner.into_inner().expect("fresh lock");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_named_is_one_the_throttle_takes() {
        use http::Method as M;
        let f = "2015-03-31";
        let requests: &[(M, &[&str])] = &[
            (M::GET, &[f, "functions"]),
            (M::POST, &[f, "functions"]),
            (M::GET, &[f, "functions", "g"]),
            (M::DELETE, &[f, "functions", "g"]),
            (M::POST, &[f, "functions", "g", "invocations"]),
            (M::GET, &[f, "functions", "g", "configuration"]),
            (M::PUT, &[f, "functions", "g", "configuration"]),
            (M::PUT, &[f, "functions", "g", "code"]),
            (M::POST, &[f, "functions", "g", "versions"]),
            (M::GET, &[f, "functions", "g", "versions"]),
            (M::POST, &[f, "functions", "g", "aliases"]),
            (M::GET, &[f, "functions", "g", "aliases"]),
            (M::GET, &[f, "functions", "g", "aliases", "live"]),
            (M::PUT, &[f, "functions", "g", "aliases", "live"]),
            (M::DELETE, &[f, "functions", "g", "aliases", "live"]),
            (M::GET, &[f, "functions", "g", "policy"]),
            (M::POST, &[f, "functions", "g", "policy"]),
            (M::GET, &[f, "functions", "g", "event-invoke-config"]),
            (M::PUT, &[f, "functions", "g", "event-invoke-config"]),
            (M::POST, &[f, "functions", "g", "event-invoke-config"]),
            (M::DELETE, &[f, "functions", "g", "event-invoke-config"]),
            (
                M::GET,
                &[f, "functions", "g", "event-invoke-config", "list"],
            ),
        ];
        let named: Vec<&str> = requests.iter().map(|(m, s)| operation(m, s)).collect();
        assert_eq!(named, OPERATIONS);
        assert_eq!(operation(&M::PATCH, &[f, "layers"]), "Other");
    }

    #[test]
    fn requests_are_sorted_into_lambdas_quotas() {
        let get = http::Method::GET;
        let post = http::Method::POST;
        let put = http::Method::PUT;
        let cases: &[(&http::Method, &[&str], Api)] = &[
            (
                &post,
                &["2015-03-31", "functions", "f", "invocations"],
                Api::Uncounted,
            ),
            (
                &post,
                &["2014-11-13", "functions", "f", "invoke-async"],
                Api::Uncounted,
            ),
            (&get, &["2015-03-31", "functions", "f"], Api::GetFunction),
            (
                &get,
                &["2015-03-31", "functions", "f", "policy"],
                Api::GetPolicy,
            ),
            (
                &get,
                &["2015-03-31", "functions", "f", "configuration"],
                Api::ControlPlane,
            ),
            (
                &get,
                &["2015-03-31", "functions", "f", "aliases", "live"],
                Api::ControlPlane,
            ),
            (
                &put,
                &["2015-03-31", "functions", "f", "aliases", "live"],
                Api::ControlPlane,
            ),
            (
                &post,
                &["2015-03-31", "functions", "f", "versions"],
                Api::ControlPlane,
            ),
            (&get, &["2015-03-31", "functions"], Api::ControlPlane),
            (&post, &["_sluice", "throttle"], Api::Uncounted),
            (&post, &["moto-api", "reset"], Api::Uncounted),
        ];
        for (method, segments, expected) in cases {
            assert_eq!(
                Api::of(method, segments),
                *expected,
                "{method} {segments:?}"
            );
        }
        let named = |method: &http::Method, segments: &[&str]| operation(method, segments);
        let alias = ["2015-03-31", "functions", "f", "aliases", "live"];
        assert_eq!(named(&get, &alias), "GetAlias");
        assert_eq!(named(&put, &alias), "UpdateAlias");
        assert_eq!(
            named(&post, &["2015-03-31", "functions", "f", "versions"]),
            "PublishVersion"
        );
        assert_eq!(
            named(&get, &["2015-03-31", "functions", "f", "configuration"]),
            "GetFunctionConfiguration"
        );
        assert_eq!(
            named(&put, &["2015-03-31", "functions", "f", "code"]),
            "UpdateFunctionCode"
        );
        assert_eq!(
            named(&get, &["2015-03-31", "functions", "f"]),
            "GetFunction"
        );
        assert_eq!(named(&get, &["2015-03-31", "functions"]), "ListFunctions");
        assert_eq!(
            named(&post, &["2015-03-31", "functions", "f", "invocations"]),
            "Invoke"
        );
    }

    #[test]
    fn the_bucket_lets_a_seconds_worth_through_then_refills_at_the_rate() {
        let quota = Quota::new(Rates::default());
        let start = Instant::now();
        for i in 0..15 {
            assert_eq!(
                quota.admit_at(Api::ControlPlane, "UpdateAlias", start),
                Ok(()),
                "request {i}"
            );
        }
        let wait = quota
            .admit_at(Api::ControlPlane, "UpdateAlias", start)
            .unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(67),
            "{wait:?}"
        );
        // Other quotas are separate.
        assert_eq!(
            quota.admit_at(Api::GetFunction, "GetFunction", start),
            Ok(())
        );
        assert_eq!(quota.admit_at(Api::Uncounted, "Invoke", start), Ok(()));
        // A fifteenth of a second later one more gets through, and only one.
        let later = start + Duration::from_millis(67);
        assert_eq!(quota.admit_at(Api::ControlPlane, "GetAlias", later), Ok(()));
        assert!(
            quota
                .admit_at(Api::ControlPlane, "GetAlias", later)
                .is_err()
        );
        // A long pause refills no more than a second's worth.
        let idle = start + Duration::from_secs(60);
        for _ in 0..15 {
            assert_eq!(
                quota.admit_at(Api::ControlPlane, "UpdateAlias", idle),
                Ok(())
            );
        }
        assert!(
            quota
                .admit_at(Api::ControlPlane, "UpdateAlias", idle)
                .is_err()
        );
        let report = quota.report();
        assert_eq!(
            report.control_plane,
            Counts {
                allowed: 31,
                throttled: 3
            }
        );
        assert_eq!(
            report.get_function,
            Counts {
                allowed: 1,
                throttled: 0
            }
        );
        let by_operation: Vec<(&str, Counts)> = report.by_operation.into_iter().collect();
        let counts = |allowed, throttled| Counts { allowed, throttled };
        assert_eq!(
            by_operation,
            [
                ("GetAlias", counts(1, 1)),
                ("GetFunction", counts(1, 0)),
                ("UpdateAlias", counts(30, 2)),
            ],
            "invocations are not counted"
        );
        quota.reset();
        assert_eq!(quota.report(), QuotaReport::default());
    }

    #[test]
    fn states_open_and_close_their_windows() {
        let states = FunctionStates::new(1.0);
        let arn = "arn:aws:lambda:us-east-1:123456789012:function:f";
        assert_eq!(states.status("f", "$LATEST"), ACTIVE);
        assert_eq!(states.update_conflict("f", arn), None);

        states.begin("f", Transition::Create, None);
        assert_eq!(states.status("f", "$LATEST").state, "Pending");
        assert!(
            states
                .update_conflict("f", arn)
                .unwrap()
                .contains("Pending")
        );
        assert!(states.invoke_conflict("f", "$LATEST").is_some());

        states.forget("f");
        states.begin("f", Transition::Update, None);
        let status = states.status("f", "$LATEST");
        assert_eq!(
            (status.state, status.last_update_status),
            ("Active", "InProgress")
        );
        assert!(states.update_conflict("f", arn).unwrap().contains(arn));
        // Invocations go on during an update.
        assert_eq!(states.invoke_conflict("f", "$LATEST"), None);

        states.begin("f", Transition::Publish, Some("3"));
        assert_eq!(states.status("f", "3").state, "Pending");
        assert!(states.invoke_conflict("f", "3").is_some());
        assert_eq!(states.invoke_conflict("f", "2"), None);
        assert_eq!(states.status("f", "2"), ACTIVE);

        // Scaled to nothing, every window has closed by the time it is read.
        let instant = FunctionStates::new(0.0);
        instant.begin("g", Transition::Create, None);
        assert_eq!(instant.status("g", "$LATEST"), ACTIVE);
    }

    #[test]
    fn an_update_is_claimed_before_it_is_made_so_a_second_is_refused() {
        let states = FunctionStates::new(1.0);
        let arn = "arn:aws:lambda:us-east-1:123456789012:function:f";
        let claim = states.claim_update("f", arn).expect("nothing in the way");
        // Sent while the first is on its way: refused, as during an update.
        let refused = states.claim_update("f", arn).err().expect("refused");
        assert!(refused.contains("An update is in progress"), "{refused}");
        assert!(states.update_conflict("f", arn).is_some());
        // Refused by moto, say: the claim goes, and no window opens.
        drop(claim);
        assert_eq!(states.update_conflict("f", arn), None);
        // Accepted: the window opens before the claim goes.
        let claim = states.claim_update("f", arn).expect("free again");
        states.begin("f", Transition::Update, None);
        drop(claim);
        assert!(states.update_conflict("f", arn).is_some());
        assert!(states.claim_update("f", arn).is_err());
    }

    #[test]
    fn a_configuration_gets_the_state_fields_lambda_reports() {
        let mut config = serde_json::json!({"FunctionName": "f", "State": "Active", "LastUpdateStatus": "Successful"});
        apply_status(
            &mut config,
            &Status {
                state: "Pending",
                state_reason_code: Some("Creating"),
                ..ACTIVE
            },
        );
        assert_eq!(config["State"], "Pending");
        assert_eq!(config["StateReasonCode"], "Creating");
        assert_eq!(config["StateReason"], "The function is being created.");
        assert_eq!(config["LastUpdateStatus"], "Successful");
        assert!(config.get("LastUpdateStatusReasonCode").is_none());
    }
}
