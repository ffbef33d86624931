//! Every provider and route of this gateway, built once at start-up.
//!
//! A model name resolves to a route: a `[[routes]]` entry by its name
//! (`fast`) or as `upstream/fast`; any other `upstream/<x>` goes to the
//! `default` provider (`--provider-url`) as model `<x>`, one attempt, as
//! before routes existed.

use std::{collections::HashMap, sync::Arc, time::Duration};

use super::{
    config::{MidStream, ProvidersError},
    provider::{Provider, DEFAULT},
    route::{Route, Target},
};
use crate::config::ServeConfig;

/// The gateway's providers and routes.
#[derive(Debug, Default)]
pub struct Registry {
    /// `default` first (when configured), then the file's, in its order.
    providers: Vec<Arc<Provider>>,
    routes: HashMap<String, Arc<Route>>,
    /// Route names in the file's order (for `/v1/models`).
    order: Vec<String>,
    /// The default provider's implicit routes (`upstream/<x>`) already
    /// asked for, so a relay does not build one per request. Model names
    /// come from callers, so only the first [`IMPLICIT_ROUTES`] names of at
    /// most [`IMPLICIT_NAME`] bytes are kept (a few hundred KiB at most);
    /// once it is full, other names are built per request, as before.
    implicit: parking_lot::RwLock<HashMap<String, Arc<Route>>>,
}

/// Most implicit routes [`Registry`] keeps.
const IMPLICIT_ROUTES: usize = 256;

/// Longest model name (bytes) whose implicit route is kept.
const IMPLICIT_NAME: usize = 128;

/// Checks what [`Registry::build`] will need: valid lists, and a
/// `--provider-url` when a route names the `default` provider.
pub fn check(cfg: &ServeConfig) -> Result<(), ProvidersError> {
    cfg.providers.validate()?;
    let has_default = cfg
        .provider_url
        .as_deref()
        .is_some_and(|u| !u.trim().is_empty());
    let named = cfg.providers.providers.iter().any(|p| p.name == DEFAULT);
    for r in &cfg.providers.routes {
        if r.targets.iter().any(|t| t.provider == DEFAULT) && !has_default && !named {
            return Err(ProvidersError::Invalid(format!(
                "route `{}` names the `default` provider, which needs --provider-url",
                r.name
            )));
        }
    }
    if named && has_default {
        return Err(ProvidersError::Invalid(
            "a [[providers]] entry is named `default`, which --provider-url already is".into(),
        ));
    }
    Ok(())
}

impl Registry {
    /// The providers and routes of `cfg` (checked by [`check`]; a target
    /// whose provider is missing is left out).
    pub fn build(cfg: &ServeConfig, client: impl Into<super::provider::Clients>) -> Self {
        let client = client.into();
        let mut providers: Vec<Arc<Provider>> = Vec::new();
        if let Some(p) = Provider::from_flags(cfg, client.clone()) {
            providers.push(Arc::new(p));
        }
        for spec in &cfg.providers.providers {
            providers.push(Arc::new(Provider::from_spec(spec, client.clone())));
        }
        let mut routes = HashMap::new();
        let mut order = Vec::new();
        for spec in &cfg.providers.routes {
            let targets = spec
                .targets
                .iter()
                .filter_map(|t| {
                    let provider = providers.iter().find(|p| p.name == t.provider)?.clone();
                    Some(Target {
                        provider,
                        model: t.model.clone(),
                        weight: t.weight,
                    })
                })
                .collect();
            let name = spec.name.strip_prefix("upstream/").unwrap_or(&spec.name);
            let route = Route::new(
                name,
                targets,
                spec.mid_stream,
                spec.attempts,
                Duration::from_secs(spec.deadline_secs),
            );
            order.push(name.to_owned());
            routes.insert(name.to_owned(), Arc::new(route));
        }
        Self {
            providers,
            routes,
            order,
            implicit: Default::default(),
        }
    }

    /// The route a caller's model name means, if any.
    pub fn resolve(&self, model: &str) -> Option<Arc<Route>> {
        if let Some(r) = self.routes.get(model) {
            return Some(r.clone());
        }
        let bare = model.strip_prefix("upstream/")?;
        if bare.is_empty() {
            return None;
        }
        if let Some(r) = self.routes.get(bare) {
            return Some(r.clone());
        }
        let provider = self.default_provider()?;
        let keep = {
            let implicit = self.implicit.read();
            if let Some(r) = implicit.get(model) {
                return Some(r.clone());
            }
            model.len() <= IMPLICIT_NAME && implicit.len() < IMPLICIT_ROUTES
        };
        let target = Target {
            provider: provider.clone(),
            model: bare.to_owned(),
            weight: 1,
        };
        let route = Arc::new(Route::new(
            model,
            vec![target],
            MidStream::Error,
            1,
            provider.first_token_timeout,
        ));
        if keep {
            let mut implicit = self.implicit.write();
            if implicit.len() < IMPLICIT_ROUTES {
                implicit.insert(model.to_owned(), route.clone());
            }
        }
        Some(route)
    }

    /// Whether `model` is a configured route's plain name (an alias such as
    /// `fast`, which the relay serves instead of an agent).
    pub fn is_alias(&self, model: &str) -> bool {
        self.routes.contains_key(model)
    }

    /// The configured routes' names, in the file's order.
    pub fn route_names(&self) -> &[String] {
        &self.order
    }

    pub fn providers(&self) -> &[Arc<Provider>] {
        &self.providers
    }

    /// The provider from `--provider-url`, if any.
    pub fn default_provider(&self) -> Option<&Arc<Provider>> {
        self.providers.iter().find(|p| p.name == DEFAULT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::ProvidersConfig;

    fn cfg(default: bool) -> ServeConfig {
        let mut cfg = ServeConfig::for_data_dir("/nonexistent");
        if default {
            cfg.provider_url = Some("http://127.0.0.1:9/v1".into());
        }
        cfg.providers = ProvidersConfig::from_toml(
            "[[providers]]\nname = \"b\"\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:8/v1\"\n\
             [[routes]]\nname = \"fast\"\ntargets = [{ provider = \"b\", model = \"m1\" }, { provider = \"default\", model = \"m2\" }]\n",
        )
        .unwrap();
        cfg
    }

    #[test]
    fn names_resolve_to_routes_and_the_rest_to_the_default_provider() {
        let reg = Registry::build(&cfg(true), reqwest::Client::new());
        let fast = reg.resolve("fast").unwrap();
        assert_eq!(fast.targets.len(), 2);
        assert_eq!(fast.targets[1].provider.name, "default");
        assert!(Arc::ptr_eq(&fast, &reg.resolve("upstream/fast").unwrap()));
        let other = reg.resolve("upstream/gpt-x").unwrap();
        assert_eq!(
            (other.targets[0].model.as_str(), other.attempts),
            ("gpt-x", 1)
        );
        assert!(reg.resolve("gpt-x").is_none());
        assert!(reg.resolve("upstream/").is_none());
        assert!(reg.is_alias("fast") && !reg.is_alias("upstream/fast"));
    }

    #[test]
    fn implicit_routes_are_built_once_and_bounded() {
        let reg = Registry::build(&cfg(true), reqwest::Client::new());
        let a = reg.resolve("upstream/gpt-x").unwrap();
        assert!(Arc::ptr_eq(&a, &reg.resolve("upstream/gpt-x").unwrap()));
        for i in 0..IMPLICIT_ROUTES + 10 {
            let name = format!("upstream/m{i}");
            assert_eq!(
                reg.resolve(&name).unwrap().targets[0].model,
                format!("m{i}")
            );
        }
        assert_eq!(reg.implicit.read().len(), IMPLICIT_ROUTES);
        let late = format!("upstream/m{}", IMPLICIT_ROUTES + 5);
        let (x, y) = (reg.resolve(&late).unwrap(), reg.resolve(&late).unwrap());
        assert!(!Arc::ptr_eq(&x, &y), "past the bound, built per call");
        assert_eq!(x.targets[0].model, y.targets[0].model);
        let reg = Registry::build(&cfg(true), reqwest::Client::new());
        let long = format!("upstream/{}", "m".repeat(IMPLICIT_NAME));
        let (x, y) = (reg.resolve(&long).unwrap(), reg.resolve(&long).unwrap());
        assert!(!Arc::ptr_eq(&x, &y), "a long name is not kept");
        assert!(reg.implicit.read().is_empty());
    }

    #[test]
    fn a_route_to_default_needs_the_flag() {
        assert!(check(&cfg(true)).is_ok());
        let err = check(&cfg(false)).unwrap_err().to_string();
        assert!(err.contains("--provider-url"), "{err}");
        let reg = Registry::build(&cfg(false), reqwest::Client::new());
        assert!(reg.resolve("upstream/x").is_none(), "no default provider");
    }
}
