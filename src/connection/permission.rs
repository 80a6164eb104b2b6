//! Who may connect, and what a connection may do: login against the
//! catalog's users, the vhost permission checked at connection.open, and
//! the configure / write / read checks on each method, where RabbitMQ makes
//! them (before the resource is looked up, so a refused user learns
//! nothing about what exists).
//!
//! The connection keeps the compiled permission it got at open for its
//! lifetime, so a publish pays a flag test (or one regex search), never a
//! catalog lookup. Like RabbitMQ's internal backend, permission changes
//! reach new connections, not open ones.

use super::Connection;
use crate::catalog::access::{access_refused, may_log_in_from, Access};
use crate::ids::QueueId;
use crate::protocol::{AmqpError, ShortStr};

impl Connection {
    /// The user's password matches, and a loopback-only user comes from
    /// loopback.
    pub(super) fn authenticate(&self, user: &str, password: &str) -> bool {
        let catalog = self.shard.catalog.borrow();
        let Some(known) = catalog.user(user) else {
            return false;
        };
        known.password_hash.matches(password) && may_log_in_from(user, self.peer.ip().is_loopback())
    }

    /// connection.open: the vhost exists and the user has a permission
    /// there, which the connection keeps.
    pub(super) fn admit_to_vhost(&self, vhost: &ShortStr) -> Result<(), AmqpError> {
        let catalog = self.shard.catalog.borrow();
        if !catalog.has_vhost(vhost.as_bytes()) {
            return Err(AmqpError::not_allowed(format!("vhost {vhost} not found")));
        }
        let mut state = self.state.borrow_mut();
        let user = state.user.to_str_lossy().into_owned();
        let permission = catalog.user_permission(&vhost.to_str_lossy(), &user);
        let Some(permission) = permission else {
            return Err(AmqpError::not_allowed(format!(
                "access to vhost '{vhost}' refused for user '{user}'"
            )));
        };
        state.permission = Some(permission);
        Ok(())
    }

    /// RabbitMQ's `check_resource_access` for this connection's user.
    pub(super) fn check_access(
        &self,
        access: Access,
        kind: &str,
        name: &[u8],
    ) -> Result<(), AmqpError> {
        let state = self.state.borrow();
        let allowed = state
            .permission
            .as_ref()
            .is_some_and(|permission| permission.allows(access, name));
        if allowed {
            return Ok(());
        }
        Err(access_refused(
            kind,
            name,
            &state.vhost.to_str_lossy(),
            &state.user.to_str_lossy(),
        ))
    }

    /// Resolves a queue this connection may read from (consume, get,
    /// purge): read permission first, then as [`Self::accessible_queue`].
    pub(super) fn readable_queue(&self, ch: u16, name: ShortStr) -> Result<QueueId, AmqpError> {
        let name = self.queue_name(ch, name)?;
        self.check_access(Access::Read, "queue", &name)?;
        self.accessible_queue(ch, name)
    }

    /// queue.bind / unbind: write on the queue, read on the exchange.
    pub(super) fn check_queue_binding(
        &self,
        queue: &[u8],
        exchange: &[u8],
    ) -> Result<(), AmqpError> {
        self.check_access(Access::Write, "queue", queue)?;
        self.check_access(Access::Read, "exchange", exchange)
    }

    /// exchange.bind / unbind: write on the destination, read on the source.
    pub(super) fn check_exchange_binding(
        &self,
        destination: &[u8],
        source: &[u8],
    ) -> Result<(), AmqpError> {
        self.check_access(Access::Write, "exchange", destination)?;
        self.check_access(Access::Read, "exchange", source)
    }

    /// Resolves a queue this connection may use (404 missing, 405 exclusive
    /// to another connection).
    pub(super) fn accessible_queue(&self, ch: u16, name: ShortStr) -> Result<QueueId, AmqpError> {
        let name = self.queue_name(ch, name)?;
        let catalog = self.shard.catalog.borrow();
        catalog
            .check_queue_access(&self.vhost(), &name, self.id)
            .map(|def| def.id)
    }

    /// The authenticated user's name.
    pub(crate) fn user(&self) -> String {
        self.state.borrow().user.to_str_lossy().into_owned()
    }

    pub(crate) fn vhost(&self) -> ShortStr {
        self.state.borrow().vhost.clone()
    }
}
