#!/usr/bin/env python3
"""ccxt acceptance test for kinko's Coinbase-Exchange-compatible REST surface.

Drives an unmodified `ccxt.coinbaseexchange` (pinned by scripts/install-test-deps) against a
running `kinko serve --demo`; the only changes to the client are `urls['api']` (pointed at the
server) and `timeout`. The contract it checks is crates/api/COINBASE-COMPAT.md.

    target/test-deps/venv/bin/python crates/api/tests/ccxt/acceptance.py CREDENTIALS_JSON

CREDENTIALS_JSON is the file written by `kinko serve --demo`:
    {"api": "http://127.0.0.1:PORT",
     "traders": [{"name": "alice", "user_id": 1, "api_key": "...", "email": "...",
                  "password": "...", "totp_secret": "<base32>",
                  "coinbase": {"key": "...", "secret": "<base64>", "passphrase": "..."},
                  "withdrawal_addresses": {"BTC": "...", ..., "USD": null}}, ...]}

Withdrawals need a second factor: the current TOTP code of `totp_secret`, passed to ccxt as
`params={"two_factor_code": ...}` (Coinbase's own field).

The streams are checked with ccxt.pro's `coinbaseexchange` against the server's Coinbase feed
(`/ws-feed`); the only change there is `urls['api']['ws']`. The book ccxt.pro builds from the
feed must equal the REST book at full depth after orders are placed and cancelled.

Each step prints `ok <step>: <detail>`; the first failure prints `FAIL <step>: <error repr>`
(traceback on stderr) and exits 1. The last line is `ccxt acceptance: N passed, M failed`.
Every request has a 10 s timeout and every wait is bounded, so the script always ends.
"""

import asyncio
import base64
import hashlib
import hmac
import json
import os
import struct
import sys
import time
import traceback
from decimal import ROUND_DOWN, ROUND_UP, Decimal

import ccxt
import ccxt.pro

SYMBOLS = ["BTC/USD", "ETH/USD", "LTC/USD", "BTC/JPY"]
ASSETS = ["BTC", "ETH", "LTC", "USD", "JPY"]
SYMBOL = "BTC/USD"
TIMEOUT_MS = 10000
BASE_AMOUNT = Decimal("0.001")  # the smallest amount traded or withdrawn, in BTC
ORDER_WAIT_S = 5.0  # how long an order that should have filled may take to show as done
TOTP_STEP_S = 30
WATCH_S = 10.0  # how long a ccxt.pro stream may take to deliver what a step waits for


class StepFailed(Exception):
    pass


def check(condition, message):
    if not condition:
        raise StepFailed(message)


class Runner:
    def __init__(self):
        self.passed = 0

    def step(self, name, fn, *args):
        try:
            detail = fn(*args)
        except Exception as e:  # noqa: BLE001 - every failure ends the run the same way
            print(f"FAIL {name}: {e!r}", flush=True)
            traceback.print_exc(file=sys.stderr)
            print(f"ccxt acceptance: {self.passed} passed, 1 failed", flush=True)
            sys.exit(1)
        self.passed += 1
        print(f"ok {name}: {detail}", flush=True)
        return detail


def totp_now(secret_b32):
    """The current RFC 6238 code (HMAC-SHA1, 30 s steps, 6 digits) of a base32 secret."""
    key = base64.b32decode(secret_b32.upper() + "=" * (-len(secret_b32) % 8))
    mac = hmac.new(key, struct.pack(">Q", int(time.time()) // TOTP_STEP_S), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    return "%06d" % ((struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF) % 1000000)


def make_exchange(api, key, secret, passphrase):
    exchange = ccxt.coinbaseexchange(
        {"apiKey": key, "secret": secret, "password": passphrase, "timeout": TIMEOUT_MS}
    )
    # The one change: every request (public and private) goes to kinko.
    exchange.urls["api"] = {"public": api, "private": api}
    return exchange


def make_pro_exchange(api, key, secret, passphrase):
    exchange = ccxt.pro.coinbaseexchange(
        {"apiKey": key, "secret": secret, "password": passphrase, "timeout": TIMEOUT_MS}
    )
    # The one change: REST goes to kinko, and the feed to kinko's Coinbase feed.
    ws = api.replace("http://", "ws://", 1).replace("https://", "wss://", 1) + "/ws-feed"
    exchange.urls["api"] = {"public": api, "private": api, "ws": ws}
    return exchange


def dec(x):
    return Decimal(str(x))


class Acceptance:
    def __init__(self, creds):
        self.api = creds["api"].rstrip("/")
        traders = creds["traders"]
        alice = next((t for t in traders if t.get("name") == "alice"), traders[0])
        self.trader = alice
        cb = alice["coinbase"]
        self.ex = make_exchange(self.api, cb["key"], cb["secret"], cb["passphrase"])
        self.wrong_secret = base64.b64encode(os.urandom(64)).decode()
        while self.wrong_secret == cb["secret"]:
            self.wrong_secret = base64.b64encode(os.urandom(64)).decode()
        self.market = None
        self.resting_id = None
        self.trade_amount = None
        self.market_buy_id = None
        self.market_sell_id = None
        self.withdrawal_id = None
        self.loop = asyncio.new_event_loop()
        self.pro = make_pro_exchange(self.api, cb["key"], cb["secret"], cb["passphrase"])

    # --- helpers ---------------------------------------------------------------------------

    def amount_for(self, ref_price):
        """A small BTC amount on the lot grid whose notional clears the market's minimum funds."""
        m = self.market
        lot = dec(m["precision"]["amount"])
        amount = max(BASE_AMOUNT, lot)
        base_min = m["info"].get("base_min_size")
        if base_min not in (None, ""):
            amount = max(amount, Decimal(str(base_min)))
        min_funds = m["limits"]["cost"]["min"]
        if min_funds is not None and ref_price > 0:
            amount = max(amount, dec(min_funds) * Decimal("1.5") / dec(ref_price))
        amount = (amount / lot).to_integral_value(rounding=ROUND_UP) * lot
        return float(self.ex.amount_to_precision(SYMBOL, float(amount)))

    def wait_done(self, order_id):
        """fetch_order until the order is no longer open (bounded by ORDER_WAIT_S)."""
        deadline = time.monotonic() + ORDER_WAIT_S
        while True:
            order = self.ex.fetch_order(order_id)
            if order["status"] != "open" or time.monotonic() >= deadline:
                return order
            time.sleep(0.2)

    def depth(self, levels, amount):
        """Price of the level at which `levels` (best first) holds at least `amount` in total."""
        total = Decimal(0)
        for price, size, *_ in levels:
            total += dec(size)
            if total >= dec(amount):
                return price
        raise StepFailed(f"{SYMBOL} book holds only {total} on this side; need {amount}")

    def check_filled(self, order, amount, side):
        check(order["status"] == "closed", f"order {order['id']} status {order['status']!r}, want 'closed'")
        check(order["side"] == side, f"order side {order['side']!r}, want {side!r}")
        check(order["filled"] is not None and dec(order["filled"]) == dec(amount),
              f"filled {order['filled']!r}, want {amount}")
        check(order["symbol"] == SYMBOL, f"order symbol {order['symbol']!r}")

    def run(self, coro):
        """Runs one ccxt.pro step on the loop every stream lives on (bounded by WATCH_S)."""
        return self.loop.run_until_complete(asyncio.wait_for(coro, WATCH_S * 3))

    async def next_update(self, future, what):
        try:
            return await asyncio.wait_for(future, WATCH_S)
        except asyncio.TimeoutError:
            raise StepFailed(f"no {what} within {WATCH_S} s") from None

    def rest_book(self):
        """The REST book at full depth, as ccxt reads it."""
        book = self.ex.fetch_order_book(SYMBOL)
        return [[tuple(l[:2]) for l in book["bids"]], [tuple(l[:2]) for l in book["asks"]]]

    # --- steps -----------------------------------------------------------------------------

    def load_markets(self):
        markets = self.ex.load_markets()
        for symbol in SYMBOLS:
            check(symbol in markets, f"{symbol} missing from markets {sorted(markets)}")
            m = markets[symbol]
            base, quote = symbol.split("/")
            check(m["id"] == f"{base}-{quote}", f"{symbol} id {m['id']!r}")
            check(m["base"] == base and m["quote"] == quote, f"{symbol} base/quote {m['base']}/{m['quote']}")
            check(m["spot"] is True and m["type"] == "spot", f"{symbol} not spot")
            check(m["active"] is True, f"{symbol} not active (status must be 'online')")
            for key in ("amount", "price"):
                p = m["precision"][key]
                check(p is not None and p > 0, f"{symbol} precision.{key} = {p!r}")
            check(m["precision"]["amount"] < 1, f"{symbol} lot size {m['precision']['amount']} >= 1")
            cost_min = m["limits"]["cost"]["min"]
            check(cost_min is not None and cost_min > 0, f"{symbol} limits.cost.min = {cost_min!r}")
        for code in ASSETS:
            check(code in self.ex.currencies, f"currency {code} missing from {sorted(self.ex.currencies)}")
        self.market = markets[SYMBOL]
        p = self.market["precision"]
        return (f"{len(markets)} markets incl. {', '.join(SYMBOLS)}; {SYMBOL} lot {p['amount']} "
                f"tick {p['price']} min funds {self.market['limits']['cost']['min']}")

    def fetch_order_book(self):
        book = self.ex.fetch_order_book(SYMBOL)
        bids, asks = book["bids"], book["asks"]
        check(len(bids) > 0, "no bids")
        check(len(asks) > 0, "no asks")
        for side, levels in (("bid", bids), ("ask", asks)):
            for level in levels:
                check(level[0] > 0 and level[1] > 0, f"bad {side} level {level!r}")
        check(bids[0][0] < asks[0][0], f"crossed book: best bid {bids[0][0]} >= best ask {asks[0][0]}")
        return f"{len(bids)} bids, {len(asks)} asks, best {bids[0][0]} / {asks[0][0]}"

    def check_trades(self, trades):
        check(isinstance(trades, list), f"trades is {type(trades).__name__}")
        for t in trades:
            check(t["symbol"] == SYMBOL, f"trade symbol {t['symbol']!r}")
            check(t["price"] is not None and t["price"] > 0, f"trade price {t['price']!r}")
            check(t["amount"] is not None and t["amount"] > 0, f"trade amount {t['amount']!r}")
            check(t["side"] in ("buy", "sell"), f"trade side {t['side']!r}")
            check(t["timestamp"] is not None, f"trade {t['id']} has no parseable time")
            check(t["id"] is not None, "trade without trade_id")

    def check_candles(self, candles):
        check(isinstance(candles, list), f"candles is {type(candles).__name__}")
        for c in candles:
            check(len(c) == 6 and all(v is not None for v in c), f"bad candle {c!r}")
            ts, o, h, low, close, vol = c
            check(ts % 60000 == 0, f"candle time {ts} ms is not on a minute boundary")
            check(low <= min(o, close) and h >= max(o, close) and low <= h, f"inconsistent candle {c!r}")
            check(vol >= 0, f"negative volume in {c!r}")

    def fetch_trades(self):
        trades = self.ex.fetch_trades(SYMBOL)
        self.check_trades(trades)
        last = f", last {trades[-1]['side']} {trades[-1]['amount']} @ {trades[-1]['price']}" if trades else ""
        return f"{len(trades)} public trades{last}"

    def fetch_ohlcv(self):
        candles = self.ex.fetch_ohlcv(SYMBOL, "1m")
        self.check_candles(candles)
        return f"{len(candles)} one-minute candles"

    def fetch_ticker(self):
        t = self.ex.fetch_ticker(SYMBOL)
        check(t["symbol"] == SYMBOL, f"ticker symbol {t['symbol']!r}")
        check(t["bid"] is not None and t["ask"] is not None, f"ticker bid/ask {t['bid']!r}/{t['ask']!r}")
        check(t["bid"] < t["ask"], f"ticker bid {t['bid']} >= ask {t['ask']}")
        return f"bid {t['bid']} ask {t['ask']} last {t['last']} volume {t['baseVolume']}"

    def fetch_balance(self):
        b = self.ex.fetch_balance()
        for code in ("USD", "BTC"):
            check(code in b, f"no {code} account in balance")
            free, used, total = b[code]["free"], b[code]["used"], b[code]["total"]
            check(free is not None and free > 0, f"{code} free = {free!r}")
            check(total is not None and used is not None and total >= free, f"{code} total {total} used {used}")
        return f"USD free {b['USD']['free']}, BTC free {b['BTC']['free']}"

    def create_limit_buy_resting(self):
        book = self.ex.fetch_order_book(SYMBOL)
        best_bid = book["bids"][0][0]
        price = float(self.ex.price_to_precision(SYMBOL, best_bid * 0.5))  # half the best bid: far below the ±10% band, on the passive side
        check(price < best_bid, f"price {price} not below best bid {best_bid}")
        amount = self.amount_for(price)
        o = self.ex.create_order(SYMBOL, "limit", "buy", amount, price)
        check(isinstance(o["id"], str) and o["id"] != "", f"order id {o['id']!r}")
        check(o["status"] == "open", f"status {o['status']!r}, want 'open'")
        check(o["side"] == "buy" and o["type"] == "limit", f"side/type {o['side']}/{o['type']}")
        check(o["symbol"] == SYMBOL, f"order symbol {o['symbol']!r}")
        check(o["amount"] is not None and dec(o["amount"]) == dec(amount), f"amount {o['amount']!r}, want {amount}")
        self.resting_id = o["id"]
        return f"id {o['id']}: buy {amount} @ {price} (best bid {best_bid})"

    def fetch_order(self):
        o = self.ex.fetch_order(self.resting_id)
        check(o["id"] == self.resting_id, f"id {o['id']!r}")
        check(o["status"] == "open", f"status {o['status']!r}, want 'open'")
        check(o["symbol"] == SYMBOL and o["side"] == "buy" and o["type"] == "limit",
              f"{o['symbol']} {o['side']} {o['type']}")
        check(o["filled"] is not None and o["filled"] == 0, f"filled {o['filled']!r}, want 0")
        check(o["price"] is not None and o["amount"] is not None, f"price {o['price']!r} amount {o['amount']!r}")
        check(o["timestamp"] is not None, "created_at missing or unparseable")
        return f"{o['status']} {o['side']} {o['amount']} @ {o['price']}, filled {o['filled']}"

    def fetch_open_orders(self):
        orders = self.ex.fetch_open_orders(SYMBOL)
        ids = [o["id"] for o in orders]
        check(self.resting_id in ids, f"{self.resting_id} not among open orders {ids}")
        for o in orders:
            check(o["status"] == "open", f"open order {o['id']} has status {o['status']!r}")
        return f"{len(orders)} open, includes {self.resting_id}"

    def cancel_order(self):
        self.ex.cancel_order(self.resting_id, SYMBOL)
        ids = [o["id"] for o in self.ex.fetch_open_orders(SYMBOL)]
        check(self.resting_id not in ids, f"{self.resting_id} still open after cancel")
        return f"{self.resting_id} cancelled, no longer open"

    def fetch_closed_orders(self):
        orders = self.ex.fetch_closed_orders(SYMBOL)
        match = [o for o in orders if o["id"] == self.resting_id]
        check(match, f"{self.resting_id} not among {len(orders)} closed orders")
        o = match[0]
        check(o["status"] in ("canceled", "closed"), f"status {o['status']!r}")
        check(o["filled"] is not None and o["filled"] == 0, f"filled {o['filled']!r}, want 0")
        return f"{len(orders)} closed, {self.resting_id} is {o['status']}"

    def create_stop_order(self):
        """A stop-limit sell through ccxt's unified stopPrice: Coinbase's stop + stop_price."""
        book = self.ex.fetch_order_book(SYMBOL)
        best_bid = book["bids"][0][0]
        stop = float(self.ex.price_to_precision(SYMBOL, best_bid * 0.5))  # far below: never reached here
        amount = self.amount_for(stop)
        o = self.ex.create_order(SYMBOL, "limit", "sell", amount, stop, {"stopPrice": stop})
        check(o["status"] == "open", f"status {o['status']!r}, want 'open' (Coinbase's active)")
        check(o["info"].get("status") == "active", f"info status {o['info'].get('status')!r}, want 'active'")
        check(o["info"].get("stop") == "loss", f"stop {o['info'].get('stop')!r}, want 'loss'")
        check(o["triggerPrice"] is not None and dec(o["triggerPrice"]) == dec(stop),
              f"triggerPrice {o['triggerPrice']!r}, want {stop}")
        again = self.ex.fetch_order(o["id"])
        check(dec(again["triggerPrice"]) == dec(stop), f"fetched triggerPrice {again['triggerPrice']!r}")
        self.ex.cancel_order(o["id"], SYMBOL)
        done = self.ex.fetch_order(o["id"])
        check(done["status"] == "canceled", f"after cancel: {done['status']!r}")
        return f"id {o['id']}: stop loss sell {amount} @ {stop}, active, then cancelled"

    def create_gtt_order(self):
        """time_in_force GTT with cancel_after, passed through ccxt's params."""
        book = self.ex.fetch_order_book(SYMBOL)
        best_bid = book["bids"][0][0]
        price = float(self.ex.price_to_precision(SYMBOL, best_bid * 0.5))
        amount = self.amount_for(price)
        o = self.ex.create_order(SYMBOL, "limit", "buy", amount, price,
                                 {"timeInForce": "GTT", "cancel_after": "min"})
        check(o["status"] == "open", f"status {o['status']!r}, want 'open'")
        check(o["info"].get("time_in_force") == "GTT", f"time_in_force {o['info'].get('time_in_force')!r}")
        check(o["info"].get("expire_time"), f"no expire_time in {o['info']}")
        self.ex.cancel_order(o["id"], SYMBOL)
        return f"id {o['id']}: GTT buy {amount} @ {price}, expires {o['info']['expire_time']}, cancelled"

    def create_market_buy(self):
        book = self.ex.fetch_order_book(SYMBOL)
        amount = self.amount_for(book["asks"][0][0])
        self.depth(book["asks"], amount)
        o = self.ex.create_order(SYMBOL, "market", "buy", amount)
        check(isinstance(o["id"], str) and o["id"] != "", f"order id {o['id']!r}")
        # The reply itself reports what was filled: size, cost and (ccxt: cost / filled) the
        # average price, which ccxt also shows as the price of a market order.
        check(o["filled"] is not None and dec(o["filled"]) == dec(amount), f"reply filled {o['filled']!r}, want {amount}")
        check(o["cost"] is not None and o["cost"] > 0, f"reply cost {o['cost']!r}")
        check(o["average"] is not None and o["price"] == o["average"], f"reply price {o['price']!r} average {o['average']!r}")
        check(abs(dec(o["average"]) * dec(o["filled"]) - dec(o["cost"])) < Decimal("0.01"),
              f"average {o['average']} x filled {o['filled']} != cost {o['cost']}")
        done = self.wait_done(o["id"])
        self.check_filled(done, amount, "buy")
        self.trade_amount = amount
        self.market_buy_id = o["id"]
        return f"id {o['id']}: bought {done['filled']} for {done['cost']} (fees {done['fee']['cost'] if done['fee'] else None})"

    def create_market_sell(self):
        book = self.ex.fetch_order_book(SYMBOL)
        amount = self.trade_amount
        self.depth(book["bids"], amount)
        o = self.ex.create_order(SYMBOL, "market", "sell", amount)
        check(isinstance(o["id"], str) and o["id"] != "", f"order id {o['id']!r}")
        done = self.wait_done(o["id"])
        self.check_filled(done, amount, "sell")
        self.market_sell_id = o["id"]
        return f"id {o['id']}: sold {done['filled']} for {done['cost']}"

    def fetch_my_trades(self):
        trades = self.ex.fetch_my_trades(SYMBOL)
        self.check_trades(trades)
        summary = []
        for order_id, side in ((self.market_buy_id, "buy"), (self.market_sell_id, "sell")):
            fills = [t for t in trades if t["order"] == order_id]
            check(fills, f"no fills for {side} order {order_id} among {len(trades)} trades")
            filled = sum(dec(t["amount"]) for t in fills)
            check(filled == dec(self.trade_amount), f"{side} fills add up to {filled}, want {self.trade_amount}")
            for t in fills:
                check(t["side"] == side, f"fill {t['id']} side {t['side']!r}, want {side!r}")
                fee = t["fee"]
                check(fee is not None and fee["cost"] is not None and fee["cost"] >= 0, f"fill {t['id']} fee {fee!r}")
                check(fee["currency"] == "USD", f"fill {t['id']} fee currency {fee['currency']!r}")
                check(t["takerOrMaker"] == "taker", f"fill {t['id']} liquidity {t['takerOrMaker']!r}, want taker")
            summary.append(f"{side} {len(fills)} fill(s) fee {sum(dec(t['fee']['cost']) for t in fills)} USD")
        return f"{len(trades)} own trades; " + "; ".join(summary)

    def create_limit_sell_crossing(self):
        book = self.ex.fetch_order_book(SYMBOL)
        amount = self.amount_for(book["bids"][0][0])
        reach = self.depth(book["bids"], amount)
        price = float(self.ex.price_to_precision(SYMBOL, reach * 0.99))
        o = self.ex.create_order(SYMBOL, "limit", "sell", amount, price)
        check(isinstance(o["id"], str) and o["id"] != "", f"order id {o['id']!r}")
        done = self.wait_done(o["id"])
        if done["status"] == "open":
            try:
                self.ex.cancel_order(o["id"])
            except Exception:  # noqa: BLE001 - best-effort cleanup before failing
                pass
        self.check_filled(done, amount, "sell")
        check(done["average"] is not None and done["average"] >= price,
              f"average {done['average']!r} below limit {price}")
        return f"id {o['id']}: sell {amount} @ limit {price} filled at avg {done['average']}"

    def create_deposit_address(self):
        a = self.ex.create_deposit_address("BTC")
        check(isinstance(a["address"], str) and a["address"] != "", f"address {a['address']!r}")
        check(a["currency"] == "BTC", f"currency {a['currency']!r}")
        return f"BTC {a['address']}"

    def fetch_deposits(self):
        btc = self.ex.fetch_deposits("BTC")
        everything = self.ex.fetch_deposits()
        check(isinstance(btc, list) and isinstance(everything, list), "deposits are not lists")
        check(len(btc) + len(everything) > 0, "no deposits at all (the demo funding should show)")
        for d in btc + everything:
            check(d["type"] == "deposit", f"deposit {d['id']} type {d['type']!r}")
            check(d["amount"] is not None and d["amount"] > 0, f"deposit {d['id']} amount {d['amount']!r}")
            check(d["currency"] in ASSETS, f"deposit {d['id']} currency {d['currency']!r}")
        for d in btc:
            check(d["currency"] == "BTC", f"BTC deposit {d['id']} has currency {d['currency']!r}")
        codes = sorted({d["currency"] for d in everything})
        return f"{len(btc)} BTC deposits, {len(everything)} in all ({', '.join(codes)})"

    def withdraw(self):
        address = self.trader["withdrawal_addresses"]["BTC"]
        check(isinstance(address, str) and address != "", f"credentials give no BTC address: {address!r}")
        amount = float(BASE_AMOUNT)
        secret = self.trader["totp_secret"]
        # Without the second factor: refused.
        try:
            self.ex.withdraw("BTC", amount, address)
            raise StepFailed("a withdrawal without two_factor_code succeeded")
        except ccxt.ExchangeError as e:
            check("second-factor proof" in str(e), f"unexpected refusal without a code: {e!r}")
        # Each TOTP code is accepted once; the demo's own setup may have used the current one,
        # in which case the code of the next 30 s step is taken (once).
        try:
            w = self.ex.withdraw("BTC", amount, address, params={"two_factor_code": totp_now(secret)})
        except ccxt.ExchangeError as e:
            check("already used" in str(e), f"withdrawal refused: {e!r}")
            time.sleep(TOTP_STEP_S - time.time() % TOTP_STEP_S + 0.5)
            w = self.ex.withdraw("BTC", amount, address, params={"two_factor_code": totp_now(secret)})
        check(w["id"] is not None and str(w["id"]) != "", f"withdrawal id {w['id']!r}")
        self.withdrawal_id = str(w["id"])
        return f"id {w['id']}: {amount} BTC to {address}"

    def fetch_withdrawals(self):
        withdrawals = self.ex.fetch_withdrawals("BTC")
        check(isinstance(withdrawals, list), "withdrawals is not a list")
        match = [w for w in withdrawals if str(w["id"]) == self.withdrawal_id]
        check(match, f"{self.withdrawal_id} not among {len(withdrawals)} BTC withdrawals")
        w = match[0]
        check(w["type"] == "withdrawal", f"type {w['type']!r}")
        check(w["currency"] == "BTC", f"currency {w['currency']!r}")
        check(w["amount"] is not None and 0 < w["amount"] <= float(BASE_AMOUNT), f"amount {w['amount']!r}")
        return f"{len(withdrawals)} BTC withdrawals, {self.withdrawal_id} is {w['status']}"

    def public_data_after_fills(self):
        trades = self.ex.fetch_trades(SYMBOL)
        self.check_trades(trades)
        check(len(trades) > 0, "no public trades after our fills")
        candles = self.ex.fetch_ohlcv(SYMBOL, "1m")
        self.check_candles(candles)
        check(len(candles) > 0, "no candles after our fills")
        return f"{len(trades)} public trades, {len(candles)} candles, last close {candles[-1][4]}"

    def fetch_tickers(self):
        tickers = self.ex.fetch_tickers()
        check(SYMBOL in tickers, f"{SYMBOL} missing from tickers {sorted(tickers)}")
        last_trade = self.ex.fetch_trades(SYMBOL)[-1]
        t = tickers[SYMBOL]
        check(t["last"] is not None and dec(t["last"]) == dec(last_trade["price"]),
              f"{SYMBOL} ticker last {t['last']!r}, last trade at {last_trade['price']!r}")
        stats = self.ex.request("products/stats", ["public"], "GET", {})
        check(SYMBOL.replace("/", "-") in stats, "products/stats lacks BTC-USD")
        return f"{len(tickers)} tickers, {SYMBOL} last {t['last']}"

    def fetch_trading_fees(self):
        fees = self.ex.fetch_trading_fees()
        f = fees[SYMBOL]
        own = f["info"]["products"][SYMBOL.replace("/", "-")]
        maker, taker = dec(own["maker_fee_rate"]), dec(own["taker_fee_rate"])
        check(dec(f["taker"]) >= taker and dec(f["maker"]) >= maker, f"fees {f!r} below the product's {own!r}")
        # The taker fills of the market buy were charged exactly this rate, rounded down.
        unit = dec(self.ex.currencies["USD"]["precision"])
        mine = self.ex.fetch_my_trades(SYMBOL)
        for t in mine:
            if t["order"] != self.market_buy_id:
                continue
            want = (dec(t["cost"]) * taker / unit).to_integral_value(rounding=ROUND_DOWN) * unit
            check(dec(t["fee"]["cost"]) == want, f"fill {t['id']} fee {t['fee']['cost']} at rate {taker}: want {want}")
        # usd_volume covers at least the fills of this run (all within 30 days, quoted in USD).
        volume = dec(f["info"]["usd_volume"])
        traded = sum(dec(t["cost"]) for t in mine)
        check(volume >= traded > 0, f"usd_volume {volume} below this run's {traded}")
        return f"maker {f['maker']} taker {f['taker']} ({SYMBOL}: {maker}/{taker}), usd_volume {volume}"

    def fetch_ledger(self):
        entries = self.ex.fetch_ledger("BTC")
        check(len(entries) > 0, "no BTC ledger entries")
        bought = [e for e in entries if e["referenceId"] == self.market_buy_id]
        check(bought and all(e["type"] == "trade" and e["direction"] == "in" for e in bought),
              f"ledger entries of the market buy: {bought!r}")
        total = sum(dec(e["amount"]) for e in bought)
        check(total == dec(self.trade_amount), f"market buy credited {total} BTC, bought {self.trade_amount}")
        newest = max(entries, key=lambda e: (e["timestamp"], e["id"]))
        balance = self.ex.fetch_balance()["BTC"]["total"]
        check(dec(newest["after"]) == dec(balance), f"ledger balance {newest['after']} != account total {balance}")
        for e in entries:
            check(dec(e["before"]) + (dec(e["amount"]) if e["direction"] == "in" else -dec(e["amount"])) == dec(e["after"]),
                  f"entry {e['id']}: before {e['before']} amount {e['amount']} after {e['after']}")
        return f"{len(entries)} BTC entries, balance {newest['after']}"

    def paging(self):
        first = self.ex.privateGetOrders({"status": "all", "limit": 1})
        after = self.ex.last_response_headers.get("CB-AFTER") or self.ex.last_response_headers.get("cb-after")
        check(len(first) == 1 and after, f"first page {first!r}, CB-AFTER {after!r}")
        second = self.ex.privateGetOrders({"status": "all", "limit": 1, "after": after})
        check(len(second) == 1 and second[0]["id"] != first[0]["id"], f"second page {second!r}")
        check(second[0]["created_at"] <= first[0]["created_at"], "second page is not older")
        before = self.ex.last_response_headers.get("CB-BEFORE") or self.ex.last_response_headers.get("cb-before")
        back = self.ex.privateGetOrders({"status": "all", "limit": 1, "before": before})
        check([o["id"] for o in back] == [first[0]["id"]], f"page before {before}: {back!r}")
        return f"orders {first[0]['id']} then {second[0]['id']}"

    def wrong_secret_rejected(self):
        cb = self.trader["coinbase"]
        bad = make_exchange(self.api, cb["key"], self.wrong_secret, cb["passphrase"])
        try:
            bad.fetch_balance()
        except ccxt.AuthenticationError as e:
            return f"{type(e).__name__}: {str(e)[:80]}"
        raise StepFailed("fetch_balance with a wrong secret succeeded")


    # --- ccxt.pro: the Coinbase feed -----------------------------------------------------------

    async def _watch_order_book(self):
        book = await self.next_update(self.pro.watch_order_book(SYMBOL), "order book snapshot")
        check(len(book["bids"]) > 0 and len(book["asks"]) > 0, "the streamed book is empty")
        # Orders placed and cancelled while the stream runs: passive, far from the market.
        best_bid, best_ask = book["bids"][0][0], book["asks"][0][0]
        placed = []
        for side, price in (("buy", best_bid * 0.9), ("buy", best_bid * 0.8), ("sell", best_ask * 1.05)):
            price = float(self.ex.price_to_precision(SYMBOL, price))
            o = self.ex.create_order(SYMBOL, "limit", side, self.amount_for(price), price)
            placed.append(o["id"])
        self.ex.cancel_order(placed[1], SYMBOL)
        deadline = time.monotonic() + WATCH_S
        while True:
            streamed = self.pro.orderbooks[SYMBOL]
            got = [[tuple(l[:2]) for l in streamed["bids"]], [tuple(l[:2]) for l in streamed["asks"]]]
            want = self.rest_book()
            if got == want:
                break
            if time.monotonic() >= deadline:
                raise StepFailed(f"streamed book differs from REST: {len(got[0])}/{len(got[1])} "
                                 f"levels vs {len(want[0])}/{len(want[1])}; first bids {got[0][:3]} vs {want[0][:3]}")
            try:
                await asyncio.wait_for(self.pro.watch_order_book(SYMBOL), 1.0)
            except asyncio.TimeoutError:
                pass
        for order_id in (placed[0], placed[2]):
            self.ex.cancel_order(order_id, SYMBOL)
        return f"{len(got[0])} bids, {len(got[1])} asks: equal to the REST book after 3 orders and a cancel"

    def watch_order_book(self):
        return self.run(self._watch_order_book())

    async def _watch_ticker(self):
        t = await self.next_update(self.pro.watch_ticker(SYMBOL), "ticker")
        check(t["symbol"] == SYMBOL, f"ticker symbol {t['symbol']!r}")
        check(t["bid"] is not None and t["ask"] is not None and t["bid"] < t["ask"],
              f"ticker bid/ask {t['bid']!r}/{t['ask']!r}")
        check(t["timestamp"] is not None, "ticker without a parseable time")
        return f"bid {t['bid']} ask {t['ask']} last {t['last']}"

    def watch_ticker(self):
        return self.run(self._watch_ticker())

    async def _watch_tickers(self):
        symbols = ["BTC/USD", "ETH/USD"]
        got = await self.next_update(self.pro.watch_tickers(symbols), "tickers")
        check(set(got) <= set(symbols), f"tickers for {sorted(got)}, asked for {symbols}")
        # Every subscribed product's ticker arrives on subscribe; ccxt.pro keeps them all.
        deadline = time.monotonic() + WATCH_S
        while not all(s in self.pro.tickers for s in symbols) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        for symbol in symbols:
            check(symbol in self.pro.tickers, f"no ticker for {symbol}; have {sorted(self.pro.tickers)}")
            check(self.pro.tickers[symbol]["symbol"] == symbol, f"ticker under {symbol!r} is another's")
        return ", ".join(f"{s} bid {self.pro.tickers[s]['bid']} ask {self.pro.tickers[s]['ask']}" for s in symbols)

    def watch_tickers(self):
        return self.run(self._watch_tickers())

    async def _watch_trades(self):
        pending = asyncio.ensure_future(self.pro.watch_trades(SYMBOL))
        await asyncio.sleep(0.5)  # subscribed before the trade happens
        book = self.ex.fetch_order_book(SYMBOL)
        amount = self.amount_for(book["asks"][0][0])
        o = self.ex.create_order(SYMBOL, "market", "buy", amount)
        trades = await self.next_update(pending, "trade")
        self.check_trades(trades)
        t = trades[-1]
        check(t["side"] == "buy", f"streamed trade side {t['side']!r}, want the taker's 'buy'")
        return f"{len(trades)} trade(s), last {t['side']} {t['amount']} @ {t['price']} (order {o['id']})"

    def watch_trades(self):
        return self.run(self._watch_trades())

    async def _watch_orders(self):
        pending = asyncio.ensure_future(self.pro.watch_orders(SYMBOL))
        await asyncio.sleep(0.5)
        book = self.ex.fetch_order_book(SYMBOL)
        price = float(self.ex.price_to_precision(SYMBOL, book["bids"][0][0] * 0.9))
        amount = self.amount_for(price)
        o = self.ex.create_order(SYMBOL, "limit", "buy", amount, price)
        deadline = time.monotonic() + WATCH_S
        mine = None
        while mine is None or mine["status"] != "open":
            check(time.monotonic() < deadline, f"order {o['id']} not streamed as open: {mine!r}")
            orders = await self.next_update(pending, "order update")
            mine = next((x for x in orders if x["id"] == o["id"]), None)
            pending = asyncio.ensure_future(self.pro.watch_orders(SYMBOL))
        check(mine["side"] == "buy" and mine["symbol"] == SYMBOL, f"streamed order {mine['side']} {mine['symbol']}")
        check(dec(mine["amount"]) == dec(amount) and dec(mine["price"]) == dec(price),
              f"streamed amount/price {mine['amount']}/{mine['price']}, want {amount}/{price}")
        self.ex.cancel_order(o["id"], SYMBOL)
        while mine["status"] != "canceled":
            check(time.monotonic() < deadline, f"order {o['id']} not streamed as canceled: {mine['status']!r}")
            orders = await self.next_update(pending, "order update")
            mine = next((x for x in orders if x["id"] == o["id"]), mine)
            pending = asyncio.ensure_future(self.pro.watch_orders(SYMBOL))
        pending.cancel()
        return f"{o['id']}: open, then canceled"

    def watch_orders(self):
        return self.run(self._watch_orders())

    async def _watch_my_trades(self):
        pending = asyncio.ensure_future(self.pro.watch_my_trades(SYMBOL))
        await asyncio.sleep(0.5)
        book = self.ex.fetch_order_book(SYMBOL)
        amount = self.amount_for(book["asks"][0][0])
        o = self.ex.create_order(SYMBOL, "market", "buy", amount)
        deadline = time.monotonic() + WATCH_S
        fills = []
        while sum(dec(t["amount"]) for t in fills) < dec(amount):
            check(time.monotonic() < deadline, f"fills of {o['id']} streamed: {fills!r}")
            trades = await self.next_update(pending, "own trade")
            fills = [t for t in trades if t["order"] == o["id"]]
            pending = asyncio.ensure_future(self.pro.watch_my_trades(SYMBOL))
        pending.cancel()
        for t in fills:
            check(t["side"] == "buy", f"own trade side {t['side']!r}, want 'buy'")
            check(t["takerOrMaker"] == "taker", f"own trade liquidity {t['takerOrMaker']!r}, want taker")
            check(t["fee"]["rate"] is not None, f"own trade without a fee rate: {t['fee']!r}")
        rest = [t for t in self.ex.fetch_my_trades(SYMBOL) if t["order"] == o["id"]]
        check(sorted(t["id"] for t in rest) == sorted(t["id"] for t in fills),
              f"streamed fills {[t['id'] for t in fills]} vs REST {[t['id'] for t in rest]}")
        return f"{len(fills)} own fill(s) of {o['id']} for {amount}, as REST lists them"

    def watch_my_trades(self):
        return self.run(self._watch_my_trades())

    def close_streams(self):
        self.run(self.pro.close())
        self.loop.close()
        return "closed"

def main(argv):
    if len(argv) != 2:
        print(f"usage: {argv[0]} CREDENTIALS_JSON", file=sys.stderr)
        return 2
    with open(argv[1]) as f:
        creds = json.load(f)
    print(f"ccxt acceptance: ccxt {ccxt.__version__} coinbaseexchange against {creds['api']}", flush=True)
    a = Acceptance(creds)
    r = Runner()
    r.step("load_markets", a.load_markets)
    r.step("fetch_order_book", a.fetch_order_book)
    r.step("fetch_trades", a.fetch_trades)
    r.step("fetch_ohlcv", a.fetch_ohlcv)
    r.step("fetch_ticker", a.fetch_ticker)
    r.step("fetch_balance", a.fetch_balance)
    r.step("create_order limit buy (rests)", a.create_limit_buy_resting)
    r.step("fetch_order", a.fetch_order)
    r.step("fetch_open_orders", a.fetch_open_orders)
    r.step("cancel_order", a.cancel_order)
    r.step("fetch_closed_orders", a.fetch_closed_orders)
    r.step("create_order with stopPrice (stop loss, active)", a.create_stop_order)
    r.step("create_order GTT with cancel_after", a.create_gtt_order)
    r.step("create_order market buy", a.create_market_buy)
    r.step("create_order market sell", a.create_market_sell)
    r.step("fetch_my_trades", a.fetch_my_trades)
    r.step("create_order limit sell (crosses)", a.create_limit_sell_crossing)
    r.step("create_deposit_address", a.create_deposit_address)
    r.step("fetch_deposits", a.fetch_deposits)
    r.step("withdraw", a.withdraw)
    r.step("fetch_withdrawals", a.fetch_withdrawals)
    r.step("fetch_trades/fetch_ohlcv after fills", a.public_data_after_fills)
    r.step("fetch_tickers", a.fetch_tickers)
    r.step("fetch_trading_fees", a.fetch_trading_fees)
    r.step("fetch_ledger", a.fetch_ledger)
    r.step("paging with CB-AFTER / CB-BEFORE", a.paging)
    r.step("wrong secret -> AuthenticationError", a.wrong_secret_rejected)
    r.step("pro watch_order_book equals the REST book", a.watch_order_book)
    r.step("pro watch_ticker", a.watch_ticker)
    r.step("pro watch_tickers", a.watch_tickers)
    r.step("pro watch_trades", a.watch_trades)
    r.step("pro watch_orders", a.watch_orders)
    r.step("pro watch_my_trades", a.watch_my_trades)
    r.step("pro close", a.close_streams)
    print(f"ccxt acceptance: {r.passed} passed, 0 failed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
