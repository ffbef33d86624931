//! The bodies of `POST /v1/keys`, `PATCH /v1/keys/{id}` and
//! `POST /v1/keys/{id}/rotate`, and the rule of what a key may grant.
//!
//! A limit out of its range (zero, negative, fractional, absurd) is a 400
//! naming the field, from the deserializer ([`limit`]). Through the API a
//! key grants at most its own limits ([`grant`]): a limit asked above the
//! caller's is a 403 naming the field; a limit left out becomes the
//! smaller of the default and the caller's own, so a bounded key never
//! mints a key wider than itself by saying nothing. The bootstrap key and
//! `weir keys create` are the operator's and bound by nothing.

use serde::{Deserialize, Deserializer};
use utoipa::ToSchema;

use super::errors::ApiError;
use crate::{
    domain::ErrorCode,
    edge::KeyLimits,
    store::{KeyRecord, KeySettings},
};

/// Longest grace period of a rotation: seven days.
pub const MAX_GRACE_SECS: u64 = 7 * 24 * 3600;

/// Most names in a key's `models`, and the longest name (characters).
pub const MAX_MODELS: usize = 100;
pub const MAX_MODEL_NAME: usize = 200;

/// Body of `POST /v1/keys`. Unknown fields are refused (400). Every scope
/// must be held by the calling key (`*` only by a `*` key), and every
/// limit at most the calling key's own, else 403 forbidden.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// Scopes to grant (a subset of the caller's, else 403).
    #[schema(schema_with = super::openapi::schemas::scopes)]
    pub scopes: Vec<String>,
    #[serde(default)]
    #[schema(max_length = 200, default = "")]
    pub label: String,
    /// Requests per minute (default: `WEIR_RPM_PER_KEY`, 120, or the
    /// caller's own if lower).
    #[schema(minimum = 1, maximum = 1_000_000)]
    #[serde(default, deserialize_with = "limit::<_, _, 1_000_000>")]
    pub rpm: Option<u32>,
    /// Tokens per minute (default: the gateway's, unlimited unless set).
    #[schema(minimum = 1, maximum = 100_000_000)]
    #[serde(default, deserialize_with = "limit::<_, _, 100_000_000>")]
    pub tpm: Option<u64>,
    /// Tokens per UTC day (default: the gateway's, unlimited unless set).
    #[schema(minimum = 1, maximum = 1_000_000_000_000_u64)]
    #[serde(default, deserialize_with = "limit::<_, _, 1_000_000_000_000>")]
    pub daily_tokens: Option<u64>,
    /// Concurrent runs (default: the gateway's, 16).
    #[schema(minimum = 1, maximum = 10_000)]
    #[serde(default, deserialize_with = "limit::<_, _, 10_000>")]
    pub max_runs: Option<u32>,
    /// Concurrent WebSockets (default: the gateway's, 10).
    #[schema(minimum = 1, maximum = 10_000)]
    #[serde(default, deserialize_with = "limit::<_, _, 10_000>")]
    pub max_websockets: Option<u32>,
    /// Concurrent SSE streams (default: the gateway's, 20).
    #[schema(minimum = 1, maximum = 10_000)]
    #[serde(default, deserialize_with = "limit::<_, _, 10_000>")]
    pub max_sse_streams: Option<u32>,
    /// When the key stops working (RFC 3339). A time already past makes a
    /// key that is expired from the start. Not with `ttl_secs`.
    #[schema(value_type = Option<String>, format = DateTime)]
    #[serde(default)]
    pub expires_at: Option<String>,
    /// Models the key may use. Left out or null: the caller's own list
    /// (any model when the caller has none). Each must be one the caller
    /// may use (else 403).
    #[schema(schema_with = super::openapi::schemas::key_models)]
    #[serde(default)]
    pub models: Option<Vec<String>>,
    /// Seconds until the key stops working (1 to 315360000). Not with
    /// `expires_at`.
    #[schema(minimum = 1, maximum = 315_360_000)]
    #[serde(default, deserialize_with = "limit::<_, _, 315_360_000>")]
    pub ttl_secs: Option<u64>,
}

/// [`CreateKey`]'s schema with the rule its derive cannot state: not both
/// `expires_at` and `ttl_secs` (the body's schema in OpenAPI and in
/// protocol/schemas/key.json).
pub struct CreateKeyBody;

impl utoipa::PartialSchema for CreateKeyBody {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        let mut s = serde_json::to_value(<CreateKey as utoipa::PartialSchema>::schema())
            .expect("a schema is JSON");
        crate::domain::schema::lift(&mut s);
        s["not"] = serde_json::json!({"required": ["expires_at", "ttl_secs"]});
        crate::domain::schema::schema_json(s)
    }
}

impl ToSchema for CreateKeyBody {
    fn name() -> std::borrow::Cow<'static, str> {
        "CreateKey".into()
    }

    fn schemas(
        out: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        CreateKey::schemas(out);
    }
}

/// Body of `PATCH /v1/keys/{id}`: a field left out stays as it is; a
/// limit set to null goes back to the gateway's default. Every limit set
/// must be at most the calling key's own (else 403).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateKey {
    #[schema(max_length = 200)]
    #[serde(default)]
    pub label: Option<String>,
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 1_000_000)]
    #[serde(default, deserialize_with = "patch::<_, _, 1_000_000>")]
    pub rpm: Option<Option<u32>>,
    #[schema(value_type = Option<u64>, minimum = 1, maximum = 100_000_000)]
    #[serde(default, deserialize_with = "patch::<_, _, 100_000_000>")]
    pub tpm: Option<Option<u64>>,
    #[schema(value_type = Option<u64>, minimum = 1, maximum = 1_000_000_000_000_u64)]
    #[serde(default, deserialize_with = "patch::<_, _, 1_000_000_000_000>")]
    pub daily_tokens: Option<Option<u64>>,
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 10_000)]
    #[serde(default, deserialize_with = "patch::<_, _, 10_000>")]
    pub max_runs: Option<Option<u32>>,
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 10_000)]
    #[serde(default, deserialize_with = "patch::<_, _, 10_000>")]
    pub max_websockets: Option<Option<u32>>,
    #[schema(value_type = Option<u32>, minimum = 1, maximum = 10_000)]
    #[serde(default, deserialize_with = "patch::<_, _, 10_000>")]
    pub max_sse_streams: Option<Option<u32>>,
    /// The models the key may use; null: any (only a caller without a list
    /// of its own may lift one). Each must be one the caller may use.
    #[schema(schema_with = super::openapi::schemas::key_models)]
    #[serde(default, deserialize_with = "present")]
    pub models: Option<Option<Vec<String>>>,
}

/// Body of `POST /v1/keys/{id}/rotate` (may be empty or `{}`).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateKey {
    /// Seconds the current secret keeps working beside the new one (0 to
    /// 604800; default 0: it stops at once).
    #[schema(minimum = 0, maximum = 604_800, default = 0)]
    #[serde(default, deserialize_with = "grace")]
    pub grace_secs: u64,
}

/// A limit: a JSON integer from 1 to `MAX` (also spelt with a zero
/// fraction, `5.0`: JSON Schema's `integer` is a number without a
/// fractional part however it is spelt), or null. Anything else is an
/// error saying the range; the body parser puts the field's name first.
fn limit<'de, D, T, const MAX: u64>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64>,
{
    use serde::de::Error;
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    let whole = n.as_u64().or_else(|| {
        n.as_f64()
            .filter(|f| f.fract() == 0.0 && *f >= 1.0 && *f <= MAX as f64)
            .map(|f| f as u64)
    });
    whole
        .filter(|v| (1..=MAX).contains(v))
        .and_then(|v| T::try_from(v).ok())
        .map(Some)
        .ok_or_else(|| {
            D::Error::custom(format!(
                "invalid value: {n}, expected an integer from 1 to {MAX}"
            ))
        })
}

/// [`limit`] in a patch: present (null included) is `Some`.
fn patch<'de, D, T, const MAX: u64>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64>,
{
    limit::<D, T, MAX>(d).map(Some)
}

/// A nullable patch field: present (null included) is `Some`.
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// A key's `models` checked (at most [`MAX_MODELS`] names of 1 to
/// [`MAX_MODEL_NAME`] characters) and without repeats, in the order given.
pub fn check_models(models: Vec<String>) -> Result<Vec<String>, ApiError> {
    if models.len() > MAX_MODELS {
        return Err(ApiError::validation(format!(
            "models: at most {MAX_MODELS} names"
        )));
    }
    let mut out: Vec<String> = Vec::with_capacity(models.len());
    for m in models {
        // Trimmed as agent names are, so the schema's pattern (white space
        // around 1 to 200 characters) says exactly what is accepted.
        let m = m.trim().to_owned();
        let len = m.chars().count();
        if len == 0 || len > MAX_MODEL_NAME {
            return Err(ApiError::validation(format!(
                "models: `{m}` must be 1 to {MAX_MODEL_NAME} characters besides white space around them"
            )));
        }
        if !out.contains(&m) {
            out.push(m);
        }
    }
    Ok(out)
}

/// The rule of what `models` a key may grant: `caller` (`None`: the
/// operator, bound by nothing) may grant only models it may use itself, and
/// a caller with a list may not grant "any" (403 naming `models`).
pub fn grant_models(asked: Option<&[String]>, caller: Option<&KeyRecord>) -> Result<(), ApiError> {
    let Some(held) = caller.and_then(|c| c.models.as_deref()) else {
        return Ok(());
    };
    let refused = match asked {
        None => Some("any model".to_owned()),
        Some(list) => list
            .iter()
            .find(|m| !crate::store::model_allowed(Some(held), m))
            .map(|m| format!("model `{m}`")),
    };
    match refused {
        Some(what) => Err(ApiError::new(
            ErrorCode::Forbidden,
            format!("models: this key may not grant {what}"),
        )),
        None => Ok(()),
    }
}

/// `grace_secs`: 0 to [`MAX_GRACE_SECS`].
fn grace<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    use serde::de::Error;
    let n = serde_json::Number::deserialize(d)?;
    n.as_u64().filter(|v| *v <= MAX_GRACE_SECS).ok_or_else(|| {
        D::Error::custom(format!(
            "invalid value: {n}, expected an integer from 0 to {MAX_GRACE_SECS}"
        ))
    })
}

/// The key's expiry from `expires_at` or `ttl_secs` (not both), as stored
/// (RFC 3339), given the time `now` (unix seconds).
pub fn expiry(body: &CreateKey, now: u64) -> Result<Option<String>, ApiError> {
    match (&body.expires_at, body.ttl_secs) {
        (Some(_), Some(_)) => Err(ApiError::validation(
            "expires_at: give expires_at or ttl_secs, not both",
        )),
        (None, None) => Ok(None),
        (None, Some(ttl)) => Ok(Some(crate::util::format_unix(now + ttl))),
        (Some(at), None) => {
            let Some(end) = crate::keys::unix_of(at) else {
                return Err(ApiError::validation(format!(
                    "expires_at: `{at}` is not an RFC 3339 time (e.g. 2030-01-01T00:00:00Z)"
                )));
            };
            // Past is allowed (an expired key, refused with key_expired);
            // the schema cannot say "in the future", and a body it allows
            // is not refused.
            Ok(Some(crate::util::format_unix(end)))
        }
    }
}

/// Who is granting: the caller's resolved limits, or `None` for the
/// operator (the bootstrap key), who is bound by nothing.
pub type Grantor = Option<KeyLimits>;

/// The settings of a new key from `body`: limits left out are the
/// defaults, lowered to the caller's own where those are smaller; limits
/// asked above the caller's are refused (403 naming the field).
pub fn new_settings(
    body: &CreateKey,
    default_rpm: u32,
    resolve: impl Fn(&KeySettings) -> KeyLimits,
    caller: Grantor,
) -> Result<KeySettings, ApiError> {
    let mut s = KeySettings {
        label: body.label.clone(),
        rpm: body.rpm.unwrap_or(default_rpm),
        tpm: body.tpm,
        daily_tokens: body.daily_tokens,
        max_runs: body.max_runs,
        max_websockets: body.max_websockets,
        max_sse_streams: body.max_sse_streams,
        models: body.models.clone().map(check_models).transpose()?,
    };
    let Some(held) = caller else { return Ok(s) };
    let named: Vec<&str> = [
        ("rpm", body.rpm.is_some()),
        ("tpm", body.tpm.is_some()),
        ("daily_tokens", body.daily_tokens.is_some()),
        ("max_runs", body.max_runs.is_some()),
        ("max_websockets", body.max_websockets.is_some()),
        ("max_sse_streams", body.max_sse_streams.is_some()),
    ]
    .into_iter()
    .filter_map(|(f, given)| given.then_some(f))
    .collect();
    grant(&resolve(&s), &held, Some(&named))?;
    // What was left out: at most the caller's own.
    let got = resolve(&s);
    if got.rpm > held.rpm {
        s.rpm = held.rpm;
    }
    let lower = |mine: Option<u64>, theirs: Option<u64>| match (mine, theirs) {
        (_, None) => None,
        (None, Some(t)) => Some(t),
        (Some(m), Some(t)) => (m > t).then_some(t),
    };
    if let Some(t) = lower(got.tpm, held.tpm) {
        s.tpm = Some(t);
    }
    if let Some(t) = lower(got.daily_tokens, held.daily_tokens) {
        s.daily_tokens = Some(t);
    }
    let cap = |mine: u32, theirs: u32, field: &mut Option<u32>| {
        if mine > theirs {
            *field = Some(theirs);
        }
    };
    cap(got.max_runs, held.max_runs, &mut s.max_runs);
    cap(
        got.max_websockets,
        held.max_websockets,
        &mut s.max_websockets,
    );
    cap(
        got.max_sse_streams,
        held.max_sse_streams,
        &mut s.max_sse_streams,
    );
    Ok(s)
}

/// `current` with `patch` applied (null: the default; `default_rpm` for
/// `rpm`, which a key always stores), and the names of the limits it sets.
pub fn patched(
    current: &KeyRecord,
    patch: &UpdateKey,
    default_rpm: u32,
) -> Result<(KeySettings, Vec<&'static str>), ApiError> {
    let mut s = current.settings();
    let mut named = Vec::new();
    if let Some(label) = &patch.label {
        if label.chars().count() > 200 {
            return Err(ApiError::validation("label: at most 200 characters"));
        }
        s.label = label.clone();
    }
    if let Some(rpm) = patch.rpm {
        s.rpm = rpm.unwrap_or(default_rpm);
        named.push("rpm");
    }
    let mut set = |field: &'static str, v: Option<Option<u64>>, slot: &mut Option<u64>| {
        if let Some(v) = v {
            *slot = v;
            named.push(field);
        }
    };
    set("tpm", patch.tpm, &mut s.tpm);
    set("daily_tokens", patch.daily_tokens, &mut s.daily_tokens);
    let mut set32 = |field: &'static str, v: Option<Option<u32>>, slot: &mut Option<u32>| {
        if let Some(v) = v {
            *slot = v;
            named.push(field);
        }
    };
    set32("max_runs", patch.max_runs, &mut s.max_runs);
    set32(
        "max_websockets",
        patch.max_websockets,
        &mut s.max_websockets,
    );
    set32(
        "max_sse_streams",
        patch.max_sse_streams,
        &mut s.max_sse_streams,
    );
    if let Some(models) = &patch.models {
        s.models = models.clone().map(check_models).transpose()?;
    }
    Ok((s, named))
}

/// 403 naming the first of `only` (all when `None`) that `asked` has
/// above `held`.
pub fn grant(asked: &KeyLimits, held: &KeyLimits, only: Option<&[&str]>) -> Result<(), ApiError> {
    match asked.above(held, only) {
        Some(e) => Err(ApiError::new(ErrorCode::Forbidden, e.to_string())),
        None => Ok(()),
    }
}
