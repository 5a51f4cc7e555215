//! The use cases every surface shares: place and cancel orders, deposit addresses, whitelisted
//! addresses and withdrawals (each with its step-up), identity commands. The native and the
//! Coinbase surfaces parse their own wire forms and call these; these validate against the
//! replica, submit one command and map its reply.

use crate::auth::{Need, Principal};
use crate::error::{unexpected, ApiError, ApiResult};
use crate::view::*;
use crate::wire::{parse_amount, parse_uuid};
use crate::AppState;
use kinko_core::book::{OrderId, Side, Stp, TimeInForce};
use kinko_core::engine::{Command, Reply};
use kinko_core::trading::{
    ClientOrderId, ConditionalOrder, Expiry, Order, OrderRef, OrderType, PlaceOrder, StopDirection,
    StopTrigger,
};
use kinko_core::wallet::{AddressId, Withdrawal};
use kinko_core::{Reject, UserId};
use kinko_engine::replica::ReadModel;

/// Parsed order request, shared with the Coinbase surface.
pub struct OrderRequest<'a> {
    pub market: &'a str,
    pub side: &'a str,
    pub order_type: &'a str,
    pub price: Option<&'a str>,
    pub size: Option<&'a str>,
    pub funds: Option<&'a str>,
    pub tif: &'a str,
    pub client_order_id: Option<u128>,
    pub stp: Stp,
    /// `loss` or `entry`; without it, a `stop_price` takes the one its side allows (a sell
    /// stops a loss, a buy enters).
    pub stop: Option<&'a str>,
    pub stop_price: Option<&'a str>,
    /// With time in force `gtt`: exactly one of these.
    pub expire_time: Option<&'a str>,
    /// `min`, `hour` or `day` (Coinbase's `cancel_after`).
    pub cancel_after: Option<&'a str>,
}

/// One minute, hour and day: what `cancel_after` may say.
pub const CANCEL_AFTER: [(&str, u64); 3] = [
    ("min", 60_000_000_000),
    ("hour", 3_600_000_000_000),
    ("day", 86_400_000_000_000),
];

/// The stop and the expiry of an order request, if it has either.
pub fn conditions(
    m: &ReadModel,
    o: &OrderRequest<'_>,
    side: Side,
) -> ApiResult<(Option<StopTrigger>, Option<Expiry>)> {
    let r = market_ref(m, o.market)?;
    let stop = match (o.stop, o.stop_price) {
        (None, None) => None,
        (_, None) => return Err(ApiError::invalid("stop needs a stop_price")),
        (direction, Some(price)) => Some(StopTrigger {
            direction: match direction {
                None => StopDirection::for_side(side),
                Some("loss") => StopDirection::Loss,
                Some("entry") => StopDirection::Entry,
                Some(_) => return Err(ApiError::invalid("stop must be loss or entry")),
            },
            price: parse_amount("stop_price", price, r.scale.quote_decimals)?,
        }),
    };
    let gtt = o.tif.eq_ignore_ascii_case("gtt");
    let expiry = match (gtt, o.expire_time, o.cancel_after) {
        (false, None, None) => None,
        (false, _, _) => {
            return Err(ApiError::invalid(
                "expire_time and cancel_after need time_in_force gtt",
            ))
        }
        (true, Some(t), None) => {
            let s = crate::wire::parse_time_s("expire_time", t)?;
            Some(Expiry::AtNs(s.checked_mul(1_000_000_000).ok_or_else(|| {
                ApiError::invalid("expire_time is too far ahead")
            })?))
        }
        (true, None, Some(after)) => {
            let ns = CANCEL_AFTER
                .iter()
                .find(|(name, _)| *name == after)
                .map(|(_, ns)| *ns)
                .ok_or_else(|| ApiError::invalid("cancel_after must be min, hour or day"))?;
            Some(Expiry::AfterNs(ns))
        }
        (true, _, _) => {
            return Err(ApiError::invalid(
                "time_in_force gtt needs exactly one of expire_time and cancel_after",
            ))
        }
    };
    Ok((stop, expiry))
}

pub fn build_order(m: &ReadModel, user: UserId, o: &OrderRequest<'_>) -> ApiResult<PlaceOrder> {
    let r = market_ref(m, o.market)?;
    let side = match o.side {
        "buy" => Side::Buy,
        "sell" => Side::Sell,
        _ => return Err(ApiError::invalid("side must be buy or sell")),
    };
    let qd = r.scale.quote_decimals;
    let bd = r.scale.base_decimals;
    let size = o.size.map(|s| parse_amount("size", s, bd)).transpose()?;
    let order_type = match o.order_type {
        "limit" => {
            let tif = match o.tif {
                "gtc" | "GTC" | "gtt" | "GTT" => TimeInForce::Gtc,
                "ioc" | "IOC" => TimeInForce::Ioc,
                "fok" | "FOK" => TimeInForce::Fok,
                "post_only" => TimeInForce::PostOnly,
                _ => {
                    return Err(ApiError::invalid(
                        "time_in_force must be gtc, gtt, ioc, fok or post_only",
                    ))
                }
            };
            if o.funds.is_some() {
                return Err(ApiError::invalid("funds is for market orders"));
            }
            let price = o
                .price
                .ok_or_else(|| ApiError::invalid("a limit order needs a price"))?;
            if size.is_none() {
                return Err(ApiError::invalid("a limit order needs a size"));
            }
            OrderType::Limit {
                price: parse_amount("price", price, qd)?,
                tif,
            }
        }
        "market" => {
            if o.price.is_some() {
                return Err(ApiError::invalid("a market order takes no price"));
            }
            let funds = o.funds.map(|f| parse_amount("funds", f, qd)).transpose()?;
            if funds.is_some() == size.is_some() {
                return Err(ApiError::invalid(
                    "a market order needs exactly one of size and funds",
                ));
            }
            OrderType::Market { funds }
        }
        _ => return Err(ApiError::invalid("type must be limit or market")),
    };
    Ok(PlaceOrder {
        user,
        market: r.id,
        client_id: o.client_order_id.map(ClientOrderId),
        side,
        order_type,
        qty: size,
        stp: o.stp,
    })
}

pub fn parse_stp(s: Option<&str>) -> ApiResult<Stp> {
    Ok(match s {
        None | Some("cancel_newest") | Some("cn") | Some("dc") => Stp::CancelNewest,
        Some("cancel_oldest") | Some("co") => Stp::CancelOldest,
        Some("cancel_both") | Some("cb") => Stp::CancelBoth,
        Some(_) => {
            return Err(ApiError::invalid(
                "stp must be cancel_newest, cancel_oldest or cancel_both",
            ))
        }
    })
}

/// The command an order request becomes: a plain `PlaceOrder`, or with a stop or an expiry a
/// `PlaceConditionalOrder`.
pub fn order_command(m: &ReadModel, user: UserId, req: &OrderRequest<'_>) -> ApiResult<Command> {
    let order = build_order(m, user, req)?;
    Ok(match conditions(m, req, order.side)? {
        (None, None) => Command::PlaceOrder(order),
        (stop, expiry) => Command::PlaceConditionalOrder(ConditionalOrder { order, stop, expiry }),
    })
}

/// Builds, submits and counts an order; the engine's view of it after matching.
pub async fn submit_order(g: &AppState, user: UserId, req: &OrderRequest<'_>) -> ApiResult<Order> {
    let cmd = {
        let m = g.read.model();
        order_command(&m, user, req)
    };
    let cmd = match cmd {
        Ok(c) => c,
        Err(e) => {
            g.metrics
                .orders_rejected
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Err(e);
        }
    };
    let c = g.submit(cmd).await;
    let counter = match &c {
        Ok(c) if c.reply.is_ok() => &g.metrics.orders_accepted,
        _ => &g.metrics.orders_rejected,
    };
    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    match c?.reply? {
        Reply::OrderPlaced(p) => Ok(p.order),
        other => Err(unexpected(&other)),
    }
}

/// `123` or `client:<uuid>`.
pub fn order_ref(text: &str) -> ApiResult<OrderRef> {
    if let Some(c) = text.strip_prefix("client:") {
        return Ok(OrderRef::Client(ClientOrderId(parse_uuid("order id", c)?)));
    }
    text.parse::<u64>()
        .map(|i| OrderRef::Id(OrderId(i)))
        .map_err(|_| ApiError::invalid("order id must be a number or client:<uuid>"))
}

pub async fn cancel(g: &AppState, user: UserId, order: OrderRef) -> ApiResult<Order> {
    match g.submit(Command::CancelOrder { user, order }).await?.reply? {
        Reply::OrderCancelled(o) => Ok(o),
        other => Err(unexpected(&other)),
    }
}

/// Creates a new deposit address of the caller for an asset.
///
/// On a real chain the address is derived at the asset's next index; two requests racing for
/// the same index are told apart by the engine (`ADDRESS_TAKEN`) and the loser derives again.
pub async fn new_deposit_address(g: &AppState, user: UserId, code: &str) -> ApiResult<String> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        g.caught_up().await?;
        let (asset, n, index, code) = {
            let m = g.read.model();
            let (asset, _) = asset_ref(&m, code)?;
            let w = m.engine.wallet();
            let n = w.deposit_addresses(user, asset).len() as u32;
            let index = u32::try_from(w.deposit_address_count(asset)).unwrap_or(u32::MAX);
            (asset, n, index, asset_code(&m, asset))
        };
        if !g.chain.supports(&code) {
            return Err(ApiError::new(
                axum::http::StatusCode::CONFLICT,
                "DEPOSITS_UNAVAILABLE",
                format!("deposits of {code} are unavailable on this server: no chain is configured for it (a [[custody]] section, or the simulated chain of a demo)"),
            ));
        }
        let address = g.chain.deposit_address(&code, user, n, index).ok_or_else(|| {
            ApiError::unavailable(
                "CUSTODY_UNAVAILABLE",
                format!("no deposit address for {code} now: no chain is configured for it, or its node is not watching new addresses yet (retry shortly)"),
            )
        })?;
        match g
            .submit(Command::AssignDepositAddress { user, asset, address })
            .await?
            .reply
        {
            Ok(Reply::DepositAddress { address }) => return Ok(address),
            Err(kinko_core::Reject::AddressTaken) if attempt < 8 => continue,
            Err(e) => return Err(e.into()),
            Ok(other) => return Err(unexpected(&other)),
        }
    }
}

/// Adds a whitelisted withdrawal address. It becomes usable after the cooling period.
pub async fn add_address(
    g: &AppState,
    user: UserId,
    code: &str,
    address: &str,
    label: &str,
    cooling_ns: u64,
    who: Result<(&Principal, Option<&crate::stepup::StepUpIn>), kinko_core::engine::AddressAuth>,
) -> ApiResult<kinko_core::wallet::WithdrawalAddress> {
    let asset = {
        let m = g.read.model();
        asset_ref(&m, code)?.0
    };
    let code = code.to_ascii_uppercase();
    // The engine compares whitelisted addresses exactly, so it is given one spelling per
    // destination; the step-up action names that spelling too.
    let address = g
        .chain
        .canonical_address(&code, address)
        .ok_or(Reject::AddressInvalid)?;
    let address = address.as_str();
    let (by, ip) = match who {
        Ok((p, step_up)) => {
            let action = kinko_core::identity::Action::AddWithdrawalAddress {
                user,
                asset,
                address: address.to_owned(),
                label: label.to_owned(),
            };
            let proof = crate::stepup::prove(g, user, &action, step_up, &p.ip).await?;
            (
                kinko_core::engine::AddressAuth::User {
                    via: p.via.clone(),
                    proof,
                },
                p.ip.clone(),
            )
        }
        Err(operator) => (operator, String::new()),
    };
    let r = g
        .submit(Command::AddWithdrawalAddress {
            user,
            asset,
            address: address.to_owned(),
            label: label.to_owned(),
            cooling_ns,
            by,
        })
        .await
        .and_then(|c| c.reply.map_err(ApiError::from));
    match crate::stepup::audited(g, user, &ip, r).await? {
        Reply::WithdrawalAddress(a) => Ok(a),
        other => Err(unexpected(&other)),
    }
}

/// Requests a withdrawal to a whitelisted address; the amount and fee are held at once.
pub async fn withdraw(
    g: &AppState,
    p: &Principal,
    address: AddressId,
    amount: &str,
    client: Option<u128>,
    step_up: Option<&crate::stepup::StepUpIn>,
) -> ApiResult<Withdrawal> {
    p.require(Need::Withdraw)?;
    g.caught_up().await?;
    let amount = {
        let m = g.read.model();
        let a = m
            .engine
            .wallet()
            .withdrawal_address(address)
            .filter(|a| a.user == p.user && !a.removed)
            .ok_or(Reject::WithdrawalAddressNotFound)?;
        let dec = m.engine.asset(a.asset).map_or(0, |x| x.decimals);
        parse_amount("amount", amount, dec)?
    };
    // A retry of a request already taken answers with the original, without a new proof.
    if let Some(original) = g
        .read
        .model()
        .engine
        .wallet()
        .withdrawal_retry(p.user, client, address, amount)
    {
        return Ok(original?.clone());
    }
    let action = g
        .read
        .model()
        .engine
        .withdrawal_action(p.user, address, amount, client)?;
    let proof = crate::stepup::prove(g, p.user, &action, step_up, &p.ip).await?;
    let r = g
        .submit(Command::RequestWithdrawal {
            user: p.user,
            address,
            amount,
            client_id: client,
            via: p.via.clone(),
            proof,
        })
        .await
        .and_then(|c| c.reply.map_err(ApiError::from));
    match crate::stepup::audited(g, p.user, &p.ip, r).await? {
        Reply::Withdrawal(w) => Ok(w),
        other => Err(unexpected(&other)),
    }
}
