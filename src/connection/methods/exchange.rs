//! The exchange class: declare, delete, bind and unbind, each a metadata
//! change through the coordinator.

use super::not_from_client;
use crate::catalog::access::Access;
use crate::catalog::{BindingOp, DestinationName, MetaOp};
use crate::connection::requests::MetaOk;
use crate::connection::{Connection, Next};
use crate::protocol::method::*;
use crate::protocol::{AmqpError, FieldTable, ShortStr};

impl Connection {
    pub(super) fn exchange_class(&self, ch: u16, method: Method) -> Result<Next, AmqpError> {
        match method {
            Method::ExchangeDeclare(m) => self.exchange_declare(ch, m),
            Method::ExchangeDelete(m) => {
                self.check_access(Access::Configure, "exchange", &m.exchange)?;
                let op = MetaOp::ExchangeDelete {
                    vhost: self.vhost(),
                    name: m.exchange,
                    if_unused: m.if_unused,
                };
                self.meta(
                    ch,
                    op,
                    MetaOk::ExchangeDelete,
                    m.no_wait,
                    (ExchangeDelete::CLASS_ID, ExchangeDelete::METHOD_ID),
                )
            }
            Method::ExchangeBind(m) => {
                self.check_exchange_binding(&m.destination, &m.source)?;
                let destination = DestinationName::Exchange(m.destination);
                let op =
                    MetaOp::Bind(self.binding(m.source, destination, m.routing_key, m.arguments));
                self.meta(
                    ch,
                    op,
                    MetaOk::ExchangeBind,
                    m.no_wait,
                    (ExchangeBind::CLASS_ID, ExchangeBind::METHOD_ID),
                )
            }
            Method::ExchangeUnbind(m) => {
                self.check_exchange_binding(&m.destination, &m.source)?;
                let destination = DestinationName::Exchange(m.destination);
                let op =
                    MetaOp::Unbind(self.binding(m.source, destination, m.routing_key, m.arguments));
                self.meta(
                    ch,
                    op,
                    MetaOk::ExchangeUnbind,
                    m.no_wait,
                    (ExchangeUnbind::CLASS_ID, ExchangeUnbind::METHOD_ID),
                )
            }
            other => Err(not_from_client(&other)),
        }
    }

    fn exchange_declare(&self, ch: u16, m: ExchangeDeclare) -> Result<Next, AmqpError> {
        if !m.passive {
            self.check_access(Access::Configure, "exchange", &m.exchange)?;
        }
        let op = MetaOp::ExchangeDeclare {
            vhost: self.vhost(),
            name: m.exchange,
            kind: m.exchange_type,
            passive: m.passive,
            durable: m.durable,
            auto_delete: m.auto_delete,
            internal: m.internal,
            arguments: m.arguments,
        };
        self.meta(
            ch,
            op,
            MetaOk::ExchangeDeclare,
            m.no_wait,
            (ExchangeDeclare::CLASS_ID, ExchangeDeclare::METHOD_ID),
        )
    }

    pub(super) fn binding(
        &self,
        source: ShortStr,
        destination: DestinationName,
        routing_key: ShortStr,
        arguments: FieldTable,
    ) -> BindingOp {
        BindingOp {
            vhost: self.vhost(),
            source,
            destination,
            routing_key,
            arguments,
            conn: self.id,
        }
    }
}
