//! Browser tokens and accounts' HTTP Basic credentials for the map, answered by the
//! broker's accounts: the adapters that let the dashboard (which knows no accounts) ask the
//! credentials file what a token or an account may see.

use fleetcast_broker::auth::{Auth, Refused};
use fleetcast_broker::gateway::Gateway;
use fleetcast_broker::guard::{GuardSettings, LoginGuard};
use fleetcast_dashboard::board::Visibility;
use fleetcast_dashboard::tracks::{LoginFuture, LoginRefused, ViewerLogin};
use fleetcast_dashboard::web::TokenVerifier;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

/// A [`TokenVerifier`] over the broker's accounts: a token's account sees the drivers whose
/// topics it could subscribe to over MQTT.
#[derive(Debug, Clone)]
pub struct BrowserTokens {
    auth: Arc<Auth>,
}

impl BrowserTokens {
    /// Tokens checked against `auth` (its `token_secret` and accounts).
    pub fn new(auth: Arc<Auth>) -> BrowserTokens {
        BrowserTokens { auth }
    }
}

impl TokenVerifier for BrowserTokens {
    fn verify(&self, token: &str, now: u64) -> Result<Visibility, String> {
        let access = self
            .auth
            .check_token(token, now)
            .map_err(|e| e.to_string())?;
        // A browser has no client id of its own: the account name fills both variables,
        // as for an MQTT client whose id is its username.
        let mut filters = access
            .grants
            .subscribe_filters(&access.account, &access.account);
        // A share link shows one driver, if its account may see it at all.
        if let Some(driver) = &access.driver {
            let topic = fleetcast_proto::topic::location_topic(driver);
            let one_level = !driver.is_empty() && !driver.contains(['/', '+', '#']);
            if !one_level
                || !access
                    .grants
                    .may_subscribe(&topic, &access.account, &access.account)
            {
                return Err(format!("{} may not see {driver}", access.account));
            }
            filters = vec![format!("drivers/{driver}/+")];
        }
        Ok(Visibility {
            filters: filters.into(),
            account: access.account,
            expires_at: Some(access.expires_at),
        })
    }
}

/// A [`ViewerLogin`] over the broker's accounts: an account sees the drivers whose topics
/// it could subscribe to over MQTT. Checked as an MQTT login is, under the gateway's
/// failed-login limits once [`AccountLogins::gateway`] is set (`serve`), under limits of its
/// own (the default `[limits]`) before and without one (`fleetcast dashboard`).
#[derive(Debug, Clone)]
pub struct AccountLogins {
    auth: Arc<Auth>,
    gateway: Arc<OnceLock<Arc<Gateway>>>,
    own: Arc<LoginGuard>,
}

impl AccountLogins {
    /// Logins checked against `auth`.
    pub fn new(auth: Arc<Auth>) -> AccountLogins {
        let limits = fleetcast_broker::Config::default().limits;
        AccountLogins {
            auth,
            gateway: Arc::new(OnceLock::new()),
            own: Arc::new(LoginGuard::new(GuardSettings::from_limits(&limits))),
        }
    }

    /// Where the gateway goes once the broker has one (its limits are then shared with
    /// MQTT logins and the other HTTP APIs).
    pub fn gateway(&self) -> Arc<OnceLock<Arc<Gateway>>> {
        Arc::clone(&self.gateway)
    }
}

impl ViewerLogin for AccountLogins {
    fn login<'a>(&'a self, peer: IpAddr, user: &'a str, password: &'a str) -> LoginFuture<'a> {
        Box::pin(async move {
            let guard = self.gateway.get().map_or(&*self.own, |g| &g.logins);
            let grants = self
                .auth
                .check_from(guard, peer, user, Some((user, password)))
                .await
                .map_err(|r| match r {
                    Refused::Held(_) => LoginRefused::Held,
                    Refused::Denied(_) => LoginRefused::Denied,
                })?;
            Ok(Visibility {
                filters: grants.subscribe_filters(user, user).into(),
                account: user.to_owned(),
                expires_at: None,
            })
        })
    }
}
