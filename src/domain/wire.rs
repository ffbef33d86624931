//! [`wire_enum!`]: an enum of fixed wire strings, written once per variant,
//! so `as_str`, `Display`, `FromStr`, serde and the JSON Schema cannot
//! disagree on the spelling.

/// A string that is none of an enum's values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} `{text}`")]
pub struct UnknownValue {
    pub kind: &'static str,
    pub text: String,
}

/// Declares an enum whose values travel as fixed strings:
///
/// ```ignore
/// wire_enum! {
///     /// Docs.
///     pub enum LogLevel("log level") { Info = "info", Warn = "warn" }
/// }
/// ```
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident($kind:literal) {
            $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord,
            serde::Serialize, serde::Deserialize,
        )]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// The value as it travels.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }
        }

        // By hand, not derived: utoipa's derive does not see a
        // `#[serde(rename = $text)]` that comes from a macro fragment and
        // would document the Rust variant names instead of the wire ones.
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::schema::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .enum_values(Some([$($text),+]))
                    .into()
            }
        }

        impl utoipa::ToSchema for $name {}

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::domain::wire::UnknownValue;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    _ => Err($crate::domain::wire::UnknownValue {
                        kind: $kind,
                        text: s.to_owned(),
                    }),
                }
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                self.as_str()
            }
        }
    };
}

pub(crate) use wire_enum;

/// Checks that every value of a wire enum survives `as_str`/`FromStr` and
/// serde both ways, with the same spelling, and that its JSON Schema lists
/// exactly those spellings.
#[cfg(test)]
pub(crate) fn assert_round_trips<T>(all: &[T])
where
    T: Copy
        + PartialEq
        + std::fmt::Debug
        + std::fmt::Display
        + std::str::FromStr
        + serde::Serialize
        + serde::de::DeserializeOwned
        + utoipa::PartialSchema,
    <T as std::str::FromStr>::Err: std::fmt::Debug,
{
    let schema = serde_json::to_value(T::schema()).unwrap();
    let spelled: Vec<String> = all.iter().map(|v| v.to_string()).collect();
    assert_eq!(schema["enum"], serde_json::json!(spelled), "{schema}");
    for &v in all {
        let text = v.to_string();
        assert_eq!(text.parse::<T>().unwrap(), v);
        let json = serde_json::to_string(&v).unwrap();
        assert_eq!(json, format!("\"{text}\""));
        assert_eq!(serde_json::from_str::<T>(&json).unwrap(), v);
    }
}
