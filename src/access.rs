//! Browser tokens for the map, answered by the broker's accounts: the adapter that lets the
//! dashboard (which knows no accounts) ask the credentials file what a token may see.

use fleetcast_broker::auth::Auth;
use fleetcast_dashboard::board::Visibility;
use fleetcast_dashboard::web::TokenVerifier;
use std::sync::Arc;

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
