//! Browser tokens and accounts' HTTP Basic credentials for the map, answered by the
//! broker's accounts: the adapters that let the dashboard (which knows no accounts) ask the
//! credentials file what a token or an account may see, and the board whether a share
//! link's trip is over.

use fleetcast_broker::auth::{Auth, Refused, TokenAccess};
use fleetcast_broker::gateway::Gateway;
use fleetcast_broker::guard::{GuardSettings, LoginGuard};
use fleetcast_dashboard::board::{Board, Visibility};
use fleetcast_dashboard::tracks::{LoginFuture, LoginRefused, ViewerLogin};
use fleetcast_dashboard::visibility::LinkEnd;
use fleetcast_dashboard::web::{Refusal, TokenVerifier};
use fleetcast_proto::token::TokenError;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

/// A [`TokenVerifier`] over the broker's accounts: a token's account sees the drivers whose
/// topics it could subscribe to over MQTT.
#[derive(Debug, Clone)]
pub struct BrowserTokens {
    auth: Arc<Auth>,
    /// The board that knows drivers' statuses (set once the dashboard exists); without it
    /// a link made `--until-status` ends only at its expiry or revocation.
    board: Arc<OnceLock<Arc<Board>>>,
}

impl BrowserTokens {
    /// Tokens checked against `auth` (its `token_secret` and accounts).
    pub fn new(auth: Arc<Auth>) -> BrowserTokens {
        BrowserTokens {
            auth,
            board: Arc::new(OnceLock::new()),
        }
    }

    /// The board whose drivers' statuses end share links made `--until-status`.
    pub fn with_board(&self, board: Arc<Board>) {
        let _ = self.board.set(board);
    }

    /// Whether the link `access` stands for is over: revoked, or its driver entered the
    /// ending status after the link was made.
    fn ended(&self, access: &TokenAccess) -> Option<Refusal> {
        if access
            .link_id
            .as_deref()
            .is_some_and(|id| self.auth.is_revoked(id))
        {
            return Some(gone("share link revoked"));
        }
        let (Some(driver), Some(status)) = (&access.driver, access.until_status) else {
            return None;
        };
        let board = self.board.get()?;
        let since_ms = access.issued_at.saturating_mul(1_000);
        board
            .entered_since(driver, status, since_ms)
            .then(|| gone("the ride is over"))
    }
}

fn gone(why: &str) -> Refusal {
    Refusal {
        gone: true,
        why: why.to_owned(),
    }
}

impl TokenVerifier for BrowserTokens {
    fn verify(&self, token: &str, now: u64) -> Result<Visibility, Refusal> {
        let access = self.auth.check_token(token, now).map_err(|e| Refusal {
            gone: matches!(e, TokenError::Expired | TokenError::Revoked),
            why: e.to_string(),
        })?;
        // A browser has no client id of its own: the account name fills both variables,
        // as for an MQTT client whose id is its username.
        let mut filters = access
            .grants
            .subscribe_filters(&access.account, &access.account);
        let mut ends = None;
        // A share link shows one driver, if its account may see it at all.
        if let Some(driver) = &access.driver {
            let topic = fleetcast_proto::topic::location_topic(driver);
            let one_level = !driver.is_empty() && !driver.contains(['/', '+', '#']);
            if !one_level
                || !access
                    .grants
                    .may_subscribe(&topic, &access.account, &access.account)
            {
                return Err(Refusal {
                    gone: false,
                    why: format!("{} may not see {driver}", access.account),
                });
            }
            filters = vec![format!("drivers/{driver}/+")];
            if let Some(over) = self.ended(&access) {
                return Err(over);
            }
            // Checked again at every batch, so an open page closes when the link ends.
            let me = self.clone();
            let access = access.clone();
            ends = Some(LinkEnd(Arc::new(move |_| me.ended(&access).is_some())));
        }
        Ok(Visibility {
            filters: filters.into(),
            account: access.account,
            expires_at: Some(access.expires_at),
            ends,
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
                ends: None,
            })
        })
    }
}
