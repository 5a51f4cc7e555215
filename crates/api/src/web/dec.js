// kinko decimal strings: amounts, prices and sizes as the API writes them ("12.5", "0.0001"),
// handled as BigInt counts of the smallest unit, never as floating point. Loaded by the pages
// before their own script; everything is on `kinkoDec`.
"use strict";

const kinkoDec = (() => {
  const RE = /^[0-9]+(\.[0-9]+)?$/;

  // Digits after the point of a decimal string ("0.01" -> 2, "5" -> 0).
  function places(s) {
    const i = String(s).indexOf(".");
    return i < 0 ? 0 : String(s).length - i - 1;
  }

  // `s` in units of 10^-decimals (BigInt); throws on anything but a plain decimal, or more
  // places than `decimals` unless they are zeros.
  function toUnits(s, decimals) {
    s = String(s).trim();
    if (!RE.test(s)) throw new Error("not a decimal number: " + s);
    let [whole, frac = ""] = s.split(".");
    if (frac.length > decimals) {
      if (!/^0*$/.test(frac.slice(decimals))) throw new Error("more than " + decimals + " decimal places: " + s);
      frac = frac.slice(0, decimals);
    }
    return BigInt(whole + frac.padEnd(decimals, "0"));
  }

  // Units of 10^-decimals back to a decimal string, trailing zeros kept down to `minPlaces`.
  function fromUnits(units, decimals, minPlaces = 0) {
    units = BigInt(units);
    const neg = units < 0n;
    let digits = (neg ? -units : units).toString().padStart(decimals + 1, "0");
    let whole = digits.slice(0, digits.length - decimals);
    let frac = decimals ? digits.slice(digits.length - decimals) : "";
    while (frac.length > minPlaces && frac.endsWith("0")) frac = frac.slice(0, -1);
    return (neg ? "-" : "") + whole + (frac ? "." + frac : "");
  }

  // Whether `s` is a whole multiple of `step` (both decimal strings).
  function isMultiple(s, step) {
    const d = Math.max(places(s), places(step));
    const st = toUnits(step, d);
    return st > 0n && toUnits(s, d) % st === 0n;
  }

  // `s` rounded down to a multiple of `step`, written with the step's places ("0.010" has two).
  function floorTo(s, step) {
    const d = Math.max(places(s), places(step));
    const st = toUnits(step, d);
    const u = toUnits(s, d);
    return fromUnits((u / st) * st, d, places(trim(step)));
  }

  // a × b, exact, as a decimal string.
  function mul(a, b) {
    const d = places(a) + places(b);
    return fromUnits(toUnits(a, places(a)) * toUnits(b, places(b)), d);
  }

  // a × b / c rounded down to `decimals` places.
  function mulDiv(a, b, c, decimals) {
    const d = Math.max(places(a), places(b), places(c));
    const num = toUnits(a, d) * toUnits(b, d) * 10n ** BigInt(decimals);
    const den = toUnits(c, d) * 10n ** BigInt(d);
    if (den === 0n) throw new Error("division by zero");
    return fromUnits(num / den, decimals);
  }

  // Basis points of a fee on an amount, rounded up to `decimals` places (a fee estimate).
  function bpsOf(amount, bps, decimals) {
    const d = places(amount);
    const num = toUnits(amount, d) * BigInt(bps) * 10n ** BigInt(decimals);
    const den = 10000n * 10n ** BigInt(d);
    return fromUnits((num + den - 1n) / den, decimals);
  }

  // a − b and a + b as decimal strings (a − b may be negative).
  function sub(a, b) {
    const d = Math.max(places(a), places(b));
    return fromUnits(toUnits(a, d) - toUnits(b, d), d);
  }
  function add(a, b) {
    const d = Math.max(places(a), places(b));
    return fromUnits(toUnits(a, d) + toUnits(b, d), d);
  }

  // -1, 0 or 1.
  function cmp(a, b) {
    const d = Math.max(places(a), places(b));
    const x = toUnits(a, d), y = toUnits(b, d);
    return x < y ? -1 : x > y ? 1 : 0;
  }

  // (b − a) / a in basis points, rounded toward zero (a 24 h change); null without an `a`.
  function changeBps(a, b) {
    if (a === null || a === undefined || b === null || b === undefined) return null;
    const d = Math.max(places(a), places(b));
    const x = toUnits(a, d);
    if (x === 0n) return null;
    return Number(((toUnits(b, d) - x) * 10000n) / x);
  }

  // `s` with its places padded to `minPlaces` and the whole part grouped by thousands.
  function group(s, minPlaces = 0, sep = ",") {
    s = String(s);
    const neg = s.startsWith("-");
    if (neg) s = s.slice(1);
    let [whole, frac = ""] = s.split(".");
    frac = frac.padEnd(minPlaces, "0");
    whole = whole.replace(/\B(?=(\d{3})+(?!\d))/g, sep);
    return (neg ? "-" : "") + whole + (frac ? "." + frac : "");
  }

  // `s` without trailing zeros after the point ("0.50000000" -> "0.5", "10.000" -> "10").
  function trim(s) {
    return fromUnits(toUnits(s, places(s)), places(s));
  }

  return Object.freeze({ trim, places, toUnits, fromUnits, isMultiple, floorTo, mul, mulDiv, bpsOf, sub, add, cmp, changeBps, group });
})();
