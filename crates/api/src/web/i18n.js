// kinko page texts in English and Japanese. The server picks the language (the `lang` cookie
// the switch sets, else Accept-Language) and writes it into <html lang>; this file reads it.
// In the HTML, an element with `data-i18n` has its English text replaced by the translation,
// `data-i18n-label` its aria-label. In scripts, `kinkoI18n.t("English text", {vars})`; keys with
// a prefix (`code.`, `status.`, `reason.`, `state.`, `tif.`) name API values. Any page can load
// it (the operators' console too): `kinkoI18n.add({ ja: {...} })` adds its own texts.
"use strict";

const kinkoI18n = (() => {
  const lang = document.documentElement.lang === "ja" ? "ja" : "en";
  const dict = {
    en: {
      "status.received": "received", "status.open": "open", "status.pending": "pending", "status.filled": "filled",
      "status.cancelled": "cancelled", "status.credited": "credited", "status.dropped": "dropped",
      "status.reversed": "reversed", "status.requested": "requested", "status.waiting": "waiting",
      "status.review": "in review", "status.approved": "approved", "status.signing": "signing",
      "status.signed": "signed", "status.broadcast": "broadcast", "status.completed": "completed",
      "status.failed": "failed", "status.reverted": "reverted",
      "tif.gtc": "GTC", "tif.ioc": "IOC", "tif.fok": "FOK", "tif.post_only": "post only", "tif.gtt": "GTT",
      "state.open": "open", "state.post_only": "post only", "state.cancel_only": "cancel only", "state.halted": "halted",
      "event.identity.registered": "Account opened", "event.identity.session_opened": "Sign-in", "event.identity.sessions_ended": "Sessions ended",
      "event.identity.factor_enrolled": "Second factor added", "event.identity.factor_removed": "Second factor removed",
      "event.identity.recovery_codes_issued": "Recovery codes issued", "event.identity.recovery_code_used": "Recovery code used",
      "event.identity.password_changed": "Password changed", "event.identity.email_changed": "Email address changed",
      "event.identity.anti_phishing_set": "Anti-phishing code set", "event.identity.reset_requested": "Password reset requested",
      "event.identity.status_changed": "Account status changed", "event.identity.auth_failed": "Failed sign-in",
      "event.wallet.address_added": "Withdrawal address added", "event.wallet.withdrawal_requested": "Withdrawal requested",
      "event.wallet.withdrawal_review": "Withdrawal held for review", "event.wallet.withdrawal_waiting": "Withdrawal delayed", "event.wallet.withdrawal_approved": "Withdrawal approved",
      "event.wallet.withdrawal_broadcast": "Withdrawal sent", "event.wallet.withdrawal_completed": "Withdrawal completed",
      "event.wallet.withdrawal_cancelled": "Withdrawal cancelled", "event.wallet.withdrawal_failed": "Withdrawal failed", "event.wallet.withdrawal_reverted": "Withdrawal reverted",
    },
    ja: {
      "Skip to content": "本文へ移動", "Markets": "マーケット", "Trade": "取引", "Wallet": "ウォレット", "Account": "アカウント",
      "Sign in": "ログイン", "Sign out": "ログアウト",
      "Proof of liabilities": "負債の証明",
      "Check that your balance is counted in the liabilities kinko signs: show your proof, download it and run kinko-verify on it.": "お客様の残高が kinko の署名した負債に含まれていることを確認できます。証明を表示してダウンロードし、kinko-verify で検証してください。",
      "Show my proof": "自分の証明を表示", "Download the proof (JSON)": "証明をダウンロード (JSON)",
      "Your balance in the proof": "証明に含まれる残高", "Total of all customers": "全顧客の合計", "Customers": "顧客数",
      "As of": "時点", "Root hash": "ルートハッシュ", "Signed by": "署名鍵",
      "Your session has ended. Sign in again: what you typed on this page is kept.": "セッションが終了しました。もう一度ログインしてください。このページに入力した内容はそのまま残ります。",
      "Email": "メールアドレス", "Password": "パスワード", "Create account": "口座を開設",
      "Confirm it is you with your authenticator app or a passkey.": "認証アプリまたはパスキーでご本人確認をしてください。",
      "Code": "コード", "Confirm code": "コードを確認", "Use a passkey": "パスキーを使う", "Confirm:": "確認:",
      "This action needs your second factor.": "この操作には二要素認証が必要です。", "Recovery code": "リカバリーコード",
      "Confirm": "確認", "Cancel": "キャンセル", "Main": "メイン", "Forgot password?": "パスワードをお忘れですか?",
      "Second factor": "二要素認証", "Choose a new password": "新しいパスワードを設定", "New password": "新しいパスワード",
      "Set password": "パスワードを設定", "Freeze account": "口座の凍結",
      "Freezing halts withdrawals and ends every session until our team reviews the account.": "凍結すると、担当者が確認するまで出金が止まり、すべてのセッションが終了します。",
      "Freeze my account": "口座を凍結する", "Your account": "お客様の口座", "Recovery codes": "リカバリーコード",
      "Write these down now; each works once, and they are shown only this time.": "今すぐ書き留めてください。各コードは一度だけ使え、表示はこの一回限りです。",
      "Second factors": "二要素認証",
      "Withdrawals approved with an authenticator app alone (a code, or to an address you added with a code) are capped per day for each coin; a passkey lifts the cap. New second factors and addresses take up to three days before our signing service accepts them.": "認証アプリだけで承認した出金(コード、またはコードで追加したアドレスへの出金)は通貨ごとに1日の上限があります。パスキーを使うと上限はなくなります。新しい認証要素とアドレスが署名サービスで有効になるまで最大3日かかります。",
      "Set up an authenticator app": "認証アプリを設定", "Add a passkey": "パスキーを追加",
      "Add this secret to your authenticator app, then enter the code it shows.": "このシークレットを認証アプリに追加し、表示されたコードを入力してください。",
      "otpauth link": "otpauth リンク", "Anti-phishing code": "フィッシング対策コード",
      "Code shown in every message from kinko": "kinko からのすべてのメッセージに表示されるコード", "Save": "保存",
      "Withdrawal addresses": "出金先アドレス", "Asset": "通貨", "Address": "アドレス", "Label": "ラベル",
      "Whitelist address": "アドレスを登録", "Sessions": "セッション", "Device": "端末", "IP address": "IP アドレス",
      "Signed in": "ログイン日時", "Expires": "有効期限", "Actions": "操作", "End every other session": "他のすべてのセッションを終了",
      "API keys": "API キー", "Scopes": "権限", "View": "閲覧", "Withdraw": "出金",
      "IP allowlist (comma-separated; required for withdraw)": "許可 IP(カンマ区切り、出金権限には必須)",
      "Expires in days": "有効日数", "Create API key": "API キーを作成",
      "Your new key. Copy it now: the secret is shown only this once.": "新しいキーです。今すぐコピーしてください。シークレットはこの一回しか表示されません。",
      "IP allowlist": "許可 IP", "Change password": "パスワードを変更", "Current password": "現在のパスワード",
      "Markets with their last price, 24 h change and volume": "各マーケットの現在値、24時間の騰落率と出来高",
      "Market": "マーケット", "Last price": "現在値", "24 h change": "24時間騰落率", "24 h high": "24時間高値",
      "24 h low": "24時間安値", "24 h volume": "24時間出来高", "Status": "状態", "Chart": "チャート",
      "Order book": "板", "Grouping": "価格の刻み", "Price": "価格", "Size": "数量", "Orders": "注文数",
      "Recent trades": "約定履歴", "Time": "時刻", "Place an order": "注文", "Side": "売買", "Buy": "買い", "Sell": "売り",
      "Order type": "注文の種類", "Limit": "指値", "Market order": "成行", "Stop limit": "逆指値(指値)", "Stop market": "逆指値(成行)",
      "Time in force": "執行条件", "Good till cancelled": "キャンセルまで有効", "Immediate or cancel": "即時約定・残りはキャンセル(IOC)",
      "Fill or kill": "全量約定しなければキャンセル(FOK)", "Post only": "メイカーのみ(Post only)", "Good till time": "期限付き",
      "Cancel after": "キャンセルまでの時間", "a minute": "1分", "an hour": "1時間", "a day": "1日", "Stop price": "トリガー価格",
      "Amount by": "数量の指定", "Funds": "金額", "Place order": "注文する", "Open orders": "未約定の注文",
      "Cancel all": "すべてキャンセル", "Type": "種類", "Filled": "約定数量", "Order history": "注文履歴", "Fills": "約定",
      "Fee": "手数料", "Liquidity": "メイカー/テイカー", "Interval": "足の間隔", "Candle chart": "ローソク足チャート",
      "Your anti-phishing code (every message from kinko shows it):": "フィッシング対策コード(kinko からのメッセージには必ず表示されます):",
      "Balances": "残高", "Available": "利用可能", "On hold": "拘束中", "Value": "評価額", "Deposit": "入金",
      "Show a deposit address": "入金アドレスを表示", "Send only this asset to:": "この通貨だけを次のアドレスに送ってください:",
      "Deposits": "入金履歴", "Amount": "数量", "Seen": "検知日時", "Transaction": "トランザクション",
      "Address book": "アドレス帳",
      "A new address can be used once its waiting period is over; a second-factor confirmation adds it.": "新しいアドレスは待機期間が終わると使えます。追加には二要素認証での確認が必要です。",
      "Add address": "アドレスを追加", "New withdrawal": "新規出金", "To address": "出金先", "Withdrawals": "出金履歴",
      "Requested": "申請日時", "Spread": "スプレッド", "No trades in this interval yet.": "この間隔ではまだ約定がありません。",
      "{what} is required.": "{what}を入力してください。", "{what} must be a decimal number like 1.25.": "{what}は 1.25 のような数値で入力してください。",
      "{what} must be a multiple of {step}.": "{what}は {step} の倍数にしてください。", "Size must be at least {min}.": "数量は {min} 以上にしてください。",
      "Fee: maker {maker}, taker {taker}.": "手数料: メイカー {maker}、テイカー {taker}。",
      "Price band: orders that trade on arrival must be within {lo} – {hi} {quote}.": "価格帯: 即時に約定する注文は {lo} – {hi} {quote} の範囲内に限られます。",
      "Value about {value} {quote}; fee at most {fee} {quote}.": "約定代金 約 {value} {quote}、手数料は最大 {fee} {quote}。",
      "Fee at most {fee} {quote}, included in the funds.": "手数料は最大 {fee} {quote}(金額に含まれます)。",
      "Order {status}: {side} {size} {base}.": "注文{status}: {side} {size} {base}。", "stop": "トリガー",
      "Cancel order {id}": "注文 {id} をキャンセル", "Order cancelled.": "注文をキャンセルしました。",
      "No such market: {m}": "マーケット {m} はありません", "Cancelled {n} orders.": "{n} 件の注文をキャンセルしました。",
      "Value ({ref})": "評価額({ref})", "Values use each market's last price against {ref}.": "評価額は各マーケットの {ref} 建て現在値で計算しています。",
      "QR code of the deposit address {address}": "入金アドレス {address} の QR コード",
      "Credited after {n} confirmations.": "{n} 承認で入金が反映されます。", "Credited after 1 confirmation.": "1 承認で入金が反映されます。", "Credited once the chain confirms it.": "ブロックチェーンで承認されると入金が反映されます。",
      "usable now": "利用可能", "usable in {time}": "あと {time} で利用可能", "Remove": "削除", "Remove address {label}": "アドレス {label} を削除",
      "add a withdrawal address": "出金先アドレスの追加", "Address added; usable from {time}.": "アドレスを追加しました。{time} から利用できます。",
      "Add an address first.": "先にアドレスを追加してください。", "Fee: {fee} {asset}.": "手数料: {fee} {asset}。",
      "Approved with an authenticator app alone: at most {budget} {asset} a day; a passkey lifts it.": "認証アプリだけで承認する出金は1日 {budget} {asset} まで。パスキーなら上限はありません。",
      "You receive {net} {asset}.": "受取額 {net} {asset}。", "withdraw {amount} {asset} to {address}": "{address} へ {amount} {asset} を出金",
      "Withdrawal requested: {status}.": "出金を申請しました: {status}。", "Cancel withdrawal {id}": "出金 {id} をキャンセル",
      "request failed": "リクエストに失敗しました", "usable from": "利用開始", "add an authenticator app": "認証アプリの追加",
      "add a passkey": "パスキーの追加", "set the anti-phishing code": "フィッシング対策コードの設定",
      "whitelist a withdrawal address": "出金先アドレスの登録", "Address whitelisted; usable from {time}.": "アドレスを登録しました。{time} から利用できます。",
      "Your account is frozen: withdrawals are halted and every session was ended. Our team will contact you.": "口座を凍結しました。出金は停止され、すべてのセッションが終了しました。担当者からご連絡します。",
      "unknown device": "不明な端末", "this session": "このセッション", "End": "終了", "End the session of {device}": "{device} のセッションを終了",
      "end every other session": "他のすべてのセッションの終了", "any": "制限なし", "Revoke": "無効化", "Revoke key {label}": "キー {label} を無効化",
      "create an API key": "API キーの作成", "change the password": "パスワードの変更",
      "Second factors were reset for everyone. Re-enrol one with a recovery code.": "全ユーザーの認証要素がリセットされました。リカバリーコードで再登録してください。",
      "Signed in.": "ログインしました。", "If an account uses this address, a reset link is on its way.": "このアドレスの口座があれば、再設定用リンクをお送りしました。",
      "Authenticator app added.": "認証アプリを追加しました。", "Passkey added.": "パスキーを追加しました。",
      "Anti-phishing code saved.": "フィッシング対策コードを保存しました。", "Signed out.": "ログアウトしました。",
      "Password changed. Sign in again; withdrawals stay locked for a while.": "パスワードを変更しました。もう一度ログインしてください。しばらくの間、出金はできません。",
      "Session ended.": "セッションを終了しました。", "Every other session was ended.": "他のすべてのセッションを終了しました。",
      "API key revoked.": "API キーを無効化しました。", "API key created.": "API キーを作成しました。", "Password changed.": "パスワードを変更しました。",
      // Facts of the account page.
      "Authenticator app": "認証アプリ", "Passkeys": "パスキー", "Recovery codes left": "残りのリカバリーコード",
      "Withdrawals locked until": "出金停止の期限", "on": "設定済み", "off": "未設定", "not set": "未設定", "not locked": "停止なし",
      "active": "有効", "frozen": "凍結中", "disabled": "停止",
      // API values.
      "buy": "買い", "sell": "売り", "limit": "指値", "market": "成行", "maker": "メイカー", "taker": "テイカー",
      "status.received": "受付", "status.open": "注文中", "status.pending": "待機中", "status.filled": "約定済み",
      "status.cancelled": "キャンセル済み", "status.credited": "反映済み", "status.dropped": "取消(チェーンから消失)",
      "status.reversed": "取消(反映後に消失)", "status.requested": "申請済み", "status.waiting": "待機中",
      "status.review": "審査中", "status.approved": "承認済み", "status.signing": "署名中", "status.signed": "署名済み",
      "status.broadcast": "送信済み", "status.completed": "完了", "status.failed": "失敗", "status.reverted": "差し戻し",
      "tif.gtc": "GTC", "tif.ioc": "IOC", "tif.fok": "FOK", "tif.post_only": "Post only", "tif.gtt": "期限付き",
      "state.open": "取引中", "state.post_only": "メイカーのみ", "state.cancel_only": "キャンセルのみ", "state.halted": "停止中",
      "reason.user": "お客様による", "reason.self_trade": "自己約定防止", "reason.unfilled": "未約定分", "reason.fok_unfillable": "全量約定できず",
      "reason.post_only_would_cross": "即時約定するため", "reason.engine": "システム", "reason.expired": "期限切れ", "reason.stop_refused": "発動時に受付不可",
      "code.NO_PROOF": "この通貨の最新の負債証明にお客様の分はありません", "code.PROOF_NOT_PUBLISHED": "負債の証明はまだ公開されていません",
      "code.FUNDS_INSUFFICIENT": "残高が足りません", "code.INSUFFICIENT_FUNDS": "残高が足りません",
      "code.PRICE_OUTSIDE_BAND": "価格が許容範囲の外です", "code.PRICE_OFF_TICK": "価格が呼値の単位に合っていません",
      "code.QTY_OFF_STEP": "数量が単位に合っていません", "code.QTY_BELOW_MIN": "数量が最小数量を下回っています",
      "code.QTY_ABOVE_MAX": "数量が最大数量を超えています", "code.NOTIONAL_BELOW_MIN": "注文金額が最小金額を下回っています",
      "code.NOTIONAL_ABOVE_MAX": "注文金額が上限を超えています", "code.MARKET_HALTED": "このマーケットは停止中です",
      "code.MARKET_CANCEL_ONLY": "このマーケットはキャンセルのみ受け付けています", "code.MARKET_POST_ONLY": "このマーケットはメイカー注文のみ受け付けています",
      "code.REFERENCE_STALE": "基準価格が古いため成行注文を受け付けられません", "code.TOO_MANY_OPEN_ORDERS": "未約定の注文が多すぎます",
      "code.CREDENTIALS_INVALID": "メールアドレスまたはパスワードが違います", "code.EMAIL_TAKEN": "このメールアドレスは使われています",
      "code.STEP_UP_INVALID": "確認コードが違います", "code.STEP_UP_EXPIRED": "確認の期限が切れました", "code.STEP_UP_REPLAYED": "このコードは使用済みです",
      "code.CANCELLED": "キャンセルしました", "code.WITHDRAWAL_ADDRESS_COOLING": "このアドレスはまだ待機期間中です",
      "code.WITHDRAWAL_LIMIT_EXCEEDED": "出金限度額を超えています", "code.SECURITY_LOCKED": "セキュリティ設定の変更後のため出金できません",
      "code.PASSKEY_REQUIRED": "この出金にはパスキーが必要です", "code.ADDRESS_INVALID": "アドレスが正しくありません",
      "code.ACCOUNT_FROZEN": "口座は凍結中です", "code.RATE_LIMITED": "リクエストが多すぎます。しばらく待ってください",
      "code.SESSION_INVALID": "セッションが無効です", "code.UNAUTHORIZED": "ログインが必要です", "code.NETWORK": "サーバーに接続できません",
      // The security log (account page) and the withdrawal limits (wallet).
      "Security log": "セキュリティログ", "Sign-ins, second-factor and address changes, and withdrawals on your account, newest first.": "口座へのログイン、二要素認証とアドレスの変更、出金の記録です(新しい順)。",
      "When": "日時", "Event": "内容", "Details": "詳細", "Show older": "さらに表示", "No events yet.": "まだ記録はありません。",
      "event.identity.registered": "口座開設", "event.identity.session_opened": "ログイン", "event.identity.sessions_ended": "セッション終了",
      "event.identity.factor_enrolled": "二要素認証を追加", "event.identity.factor_removed": "二要素認証を削除",
      "event.identity.recovery_codes_issued": "リカバリーコードを発行", "event.identity.recovery_code_used": "リカバリーコードを使用",
      "event.identity.password_changed": "パスワード変更", "event.identity.email_changed": "メールアドレス変更",
      "event.identity.anti_phishing_set": "フィッシング対策コードを設定", "event.identity.reset_requested": "パスワード再設定の申請",
      "event.identity.status_changed": "口座の状態変更", "event.identity.auth_failed": "ログイン失敗",
      "event.wallet.address_added": "出金先アドレスを追加", "event.wallet.withdrawal_requested": "出金申請",
      "event.wallet.withdrawal_review": "出金を審査中", "event.wallet.withdrawal_waiting": "出金を保留", "event.wallet.withdrawal_approved": "出金を承認",
      "event.wallet.withdrawal_broadcast": "出金を送金", "event.wallet.withdrawal_completed": "出金完了",
      "event.wallet.withdrawal_cancelled": "出金をキャンセル", "event.wallet.withdrawal_failed": "出金失敗", "event.wallet.withdrawal_reverted": "出金の取り消し",
      "new device": "新しい端末",
      "Limit left: {day} {asset} in 24 h (of {day_max}), {month} {asset} in 30 days (of {month_max}).": "残りの出金限度額: 24 時間で {day} {asset}({day_max} 中)、30 日で {month} {asset}({month_max} 中)。",
    },
  };

  // The text of `key` in the page's language with `{name}` replaced from `vars`; without a
  // translation, English, else `fallback` (when given), else the key itself.
  function t(key, vars, fallback) {
    let s = dict[lang][key];
    if (s === undefined && lang !== "en") s = dict.en[key];
    if (s === undefined) s = fallback !== undefined && fallback !== null ? fallback : key;
    if (vars) s = s.replace(/\{(\w+)\}/g, (m, k) => (vars[k] === undefined ? m : String(vars[k])));
    return s;
  }

  // Translates the page's marked elements (their English text is the key).
  function apply(root = document) {
    for (const el of root.querySelectorAll("[data-i18n]")) {
      if (el.dataset.i18nKey === undefined) el.dataset.i18nKey = el.textContent.replace(/\s+/g, " ").trim();
      const key = el.dataset.i18nKey;
      el.textContent = t(key);
    }
    for (const el of root.querySelectorAll("[data-i18n-label]")) el.setAttribute("aria-label", t(el.dataset.i18nLabel));
  }

  // The marked texts of the page that have no translation in the page's language.
  function missing(root = document) {
    if (lang === "en") return [];
    const keys = [...root.querySelectorAll("[data-i18n]")].map((el) => el.dataset.i18nKey || el.textContent.trim());
    const labels = [...root.querySelectorAll("[data-i18n-label]")].map((el) => el.dataset.i18nLabel);
    return [...keys, ...labels].filter((k) => dict[lang][k] === undefined);
  }

  // The language switch: remembered in the `lang` cookie (a preference, nothing secret).
  // Signed in (`token`), the account's messages follow the switch: the server keeps the
  // language with the account (POST /me/language).
  async function setLang(l, token) {
    const next = l === "ja" ? "ja" : "en";
    document.cookie = `lang=${next}; path=/; max-age=31536000; samesite=lax`;
    if (token) {
      try {
        await fetch("/api/v1/me/language", {
          method: "POST",
          headers: { "Authorization": "Bearer " + token, "Content-Type": "application/json" },
          body: JSON.stringify({ language: next }),
        });
      } catch (_) { /* the page still switches; the next switch tries again */ }
    }
    location.reload();
  }

  function add(more) {
    for (const l of Object.keys(more)) Object.assign(dict[l] || (dict[l] = {}), more[l]);
  }

  return Object.freeze({ lang, t, apply, missing, setLang, add });
})();
