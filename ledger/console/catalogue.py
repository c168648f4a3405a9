"""Every word the console shows, in Chinese (the default) and English: one catalogue, no text in templates.

Keys are dotted: `nav.*`, `page.*` and plain UI text. The codes the ledger stores (tiers, categories,
statuses, purposes, ...) are labelled by the ledger's one label catalogue, `ledger/domain/labels.py`, so
that a code reads the same in the console, the subject report page and the adverse-action notice; only
the console's own codes (identifier types, console actions and their outcomes) are `code.<kind>.<value>`
here. A code missing from both is shown as the code itself, never as a blank.
`tests/unit/test_console_catalogue.py` checks that every key has both languages.
"""

from __future__ import annotations

from ledger.domain import labels

LANGUAGES = ("zh", "en")
DEFAULT_LANGUAGE = "zh"

MESSAGES: dict[str, tuple[str, str]] = {
    # -- frame
    "app.title": ("消费信用联盟账本 · 运营控制台", "Consumer Credit Ledger · Operator console"),
    "app.short": ("运营控制台", "Operator console"),
    "app.zone": ("所有时间均为北京时间。", "All times are Beijing time (UTC+8)."),
    "nav.overview": ("总览", "Overview"),
    "nav.disputes": ("申诉队列", "Disputes"),
    "nav.platforms": ("成员平台", "Platforms"),
    "nav.purpose": ("用途监督", "Purpose watch"),
    "nav.ledger": ("账本状态", "Ledger status"),
    "nav.desk": ("消费者服务台", "Consumer desk"),
    "nav.signout": ("退出登录", "Sign out"),
    "nav.language": ("English", "中文"),
    "role.operator": ("运营人员", "Operator"),
    "role.desk": ("消费者服务台", "Consumer desk"),
    "role.anonymous": ("未登录", "Not signed in"),
    "signed_in_as": ("当前登录", "Signed in as"),
    # -- sign-in
    "signin.title": ("登录控制台", "Sign in to the console"),
    "signin.key": ("API 密钥", "API key"),
    "signin.help": (
        "运营人员使用具有 admin 权限的密钥，消费者服务台使用具有 dispute 权限的密钥。密钥不会被保存。",
        "Operators sign in with an admin-scoped key, the consumer desk with a dispute-scoped key. "
        "The key is not kept.",
    ),
    "signin.submit": ("登录", "Sign in"),
    "signin.failed": ("密钥无效或已撤销。", "The key is unknown or revoked."),
    "signin.no_scope": (
        "该密钥没有 admin 或 dispute 权限，不能登录控制台。",
        "This key has neither the admin nor the dispute scope and cannot sign in.",
    ),
    "signin.too_many": ("登录失败次数过多，请稍后再试。", "Too many failed attempts; try again later."),
    "signin.signed_out": ("您已退出登录。", "You are signed out."),
    # -- errors
    "error.title": ("无法完成操作", "The action could not be completed"),
    "error.csrf": (
        "表单已失效或缺少安全令牌，请刷新页面后重试。",
        "The form has expired or lacks its security token; reload the page and try again.",
    ),
    "error.forbidden": ("您的账号无权访问此页面。", "Your account may not open this page."),
    "error.unavailable": ("服务暂时不可用，请稍后再试。", "The service is unavailable; try again shortly."),
    "error.back": ("返回", "Back"),
    # -- overview
    "overview.title": ("总览", "Overview"),
    "overview.lookups": (
        "每分钟查询量（按等级，最近 60 分钟）",
        "Lookups per minute by tier (last 60 minutes)",
    ),
    "overview.reports": (
        "每日报告量（按类别，最近 30 天）",
        "Reports per day by category (last 30 days)",
    ),
    "overview.tiers": ("已评分消费者的等级分布", "Tiers over all scored consumers"),
    "overview.disputes": ("未结申诉（按剩余天数）", "Open disputes by days left"),
    "overview.overdue": ("已逾期", "Overdue"),
    "overview.days": ("天", "days"),
    "overview.total_lookups": ("最近 60 分钟查询", "Lookups, last 60 minutes"),
    "overview.total_reports": ("最近 30 天报告", "Reports, last 30 days"),
    "overview.total_scored": ("已评分消费者", "Scored consumers"),
    "overview.total_open": ("未结申诉", "Open disputes"),
    "overview.empty": ("暂无数据", "No data yet"),
    "overview.computed_at": (
        "数据统计于 {at}，每 30 秒更新一次。",
        "Figures as of {at}; they are recomputed every 30 seconds.",
    ),
    # -- disputes
    "disputes.title": ("申诉队列", "Disputes queue"),
    "disputes.help": (
        "未结申诉按截止时间排序，最紧急的在前。报告平台须在截止前维持或撤回记录，否则 SLA 任务将自动撤回。",
        "Open disputes, soonest deadline first. The reporting platform must uphold or retract the entry "
        "before the deadline, or the SLA job retracts it.",
    ),
    "disputes.platform": ("报告平台", "Platform"),
    "disputes.category": ("类别", "Category"),
    "disputes.opened": ("提出时间", "Opened"),
    "disputes.deadline": ("截止时间", "Deadline"),
    "disputes.days_left": ("剩余天数", "Days left"),
    "disputes.statement": ("消费者陈述", "Consumer's statement"),
    "disputes.none": ("当前没有未结申诉。", "No open disputes."),
    "disputes.no_statement": ("（未提交陈述）", "(no statement)"),
    "disputes.overdue": ("已逾期，等待 SLA 任务处理", "Past deadline; awaiting the SLA job"),
    "disputes.expired_title": (
        "SLA 任务已处理的逾期申诉（最近 30 天）",
        "Past-deadline disputes the SLA job closed (last 30 days)",
    ),
    "disputes.expired_action": (
        "SLA 任务于 {at} 撤回了该记录（{reason}）",
        "The SLA job retracted the entry at {at} ({reason})",
    ),
    "disputes.expired_none": (
        "最近 30 天没有逾期申诉。",
        "No disputes passed their deadline in the last 30 days.",
    ),
    "disputes.auto_refresh": ("本页每 30 秒自动刷新。", "This list refreshes every 30 seconds."),
    # -- platforms
    "platforms.title": ("成员平台", "Member platforms"),
    "platforms.help": (
        "数据与 `ledger platforms stats` 相同；走势图为最近 30 天每日值（信任度按当前运营信任度重算）。",
        "The figures of `ledger platforms stats`; sparklines show the last 30 days, day by day (trust "
        "recomputed with today's operator trust).",
    ),
    "platforms.slug": ("标识", "Slug"),
    "platforms.name": ("名称", "Name"),
    "platforms.volume": ("报告量", "Volume"),
    "platforms.dispute_rate": ("申诉率", "Dispute rate"),
    "platforms.overturn_rate": ("推翻率", "Overturn rate"),
    "platforms.effective_trust": ("有效信任度", "Effective trust"),
    "platforms.operator_trust": ("运营信任度", "Operator trust"),
    "platforms.rate_limit": ("速率限制（次/秒，突发）", "Rate limit (per second, burst)"),
    "platforms.default_rate": ("默认", "default"),
    "platforms.keys": ("API 密钥", "API keys"),
    "platforms.key_id": ("密钥编号", "Key id"),
    "platforms.scopes": ("权限", "Scopes"),
    "platforms.created": ("创建时间", "Created"),
    "platforms.revoked": ("已撤销", "Revoked"),
    "platforms.active": ("有效", "Active"),
    "platforms.revoke": ("撤销", "Revoke"),
    "platforms.revoke_confirm": (
        "确定撤销此密钥？使用它的系统将在一秒内被拒绝。",
        "Revoke this key? Systems using it are refused within a second.",
    ),
    "platforms.issue": ("签发新密钥", "Issue a new key"),
    "platforms.create": ("接纳新平台", "Admit a platform"),
    "platforms.create_submit": ("创建平台并签发密钥", "Create the platform and issue its key"),
    "platforms.set": ("保存", "Save"),
    "platforms.new_key": (
        "新密钥（仅显示这一次，请立即妥善保存）：",
        "New key (shown this once; store it now):",
    ),
    "platforms.saved": ("已保存。", "Saved."),
    "platforms.revoked_done": ("密钥已撤销。", "The key is revoked."),
    "platforms.none": ("还没有成员平台。", "No platforms yet."),
    "platforms.per_second": ("每秒", "Per second"),
    "platforms.burst": ("突发", "Burst"),
    # -- purpose watch
    "purpose.title": ("用途监督", "Purpose watch"),
    "purpose.help": (
        "最近 30 天内，以退款审核为用途却未附退款单号的查询（可能是撒网式查询）。",
        "Refund-review lookups made without a refund reference in the last 30 days (possible fishing).",
    ),
    "purpose.lookups": ("查询总数", "Lookups"),
    "purpose.without_reference": ("无退款单号", "Without a refund reference"),
    "purpose.share": ("占比", "Share"),
    "purpose.none": ("最近 30 天没有查询。", "No lookups in the last 30 days."),
    # -- ledger status
    "ledger.title": ("账本状态", "Ledger status"),
    "ledger.head": ("最新检查点", "Latest checkpoint"),
    "ledger.seq": ("树大小", "Tree size"),
    "ledger.hash": ("根哈希", "Root hash"),
    "ledger.pending": ("待排序的叶子", "Leaves waiting for the sequencer"),
    "ledger.cosignatures": ("见证签名", "Witness cosignatures"),
    "ledger.signed_at": ("时间", "At"),
    "ledger.verify": ("最近一次 ledger verify", "Last `ledger verify`"),
    "ledger.verify_ok": ("通过", "Passed"),
    "ledger.verify_failed": ("失败", "Failed"),
    "ledger.verify_never": ("尚未运行 ledger verify。", "`ledger verify` has not been run."),
    "ledger.events": ("叶子数", "Leaves"),
    "ledger.lookups": ("查询记录数", "Lookup records"),
    "ledger.problem": ("问题", "Problem"),
    "ledger.sequencer": (
        "账本是默克尔透明日志：排序器把已提交的事件编入树中并签署检查点（docs/transparency.md）。",
        "The ledger is a Merkle transparency log: the sequencer integrates committed events into the tree "
        "and signs checkpoints (docs/transparency.md).",
    ),
    "ledger.actions": ("控制台操作记录（最近 50 条）", "Console actions (latest 50)"),
    "ledger.action_at": ("时间", "At"),
    "ledger.action_who": ("操作人", "Who"),
    "ledger.action": ("操作", "Action"),
    "ledger.outcome": ("结果", "Outcome"),
    "ledger.detail": ("对象", "Target"),
    # -- desk
    "desk.title": ("消费者服务台", "Consumer desk"),
    "desk.help": (
        "输入消费者提供的标识。标识在提交时即被转换为令牌，不会被保存、记录或显示在页面上。",
        "Enter the identifiers the consumer gives. They are turned into tokens as soon as they are "
        "submitted, and are never stored, logged or shown on a page.",
    ),
    "desk.type": ("类型", "Type"),
    "desk.value": ("标识", "Identifier"),
    "desk.submit": ("查询个人信用记录报告", "Show the subject report"),
    "desk.report_title": ("个人信用记录报告", "Subject report"),
    "desk.generated": ("生成时间", "Generated"),
    "desk.incidents": ("一、事件记录", "1. Incidents"),
    "desk.scores": ("二、当前评分与原因", "2. Current scores and reasons"),
    "desk.lookups": ("三、近两年的查询记录", "3. Lookups in the past two years"),
    "desk.no_incidents": ("没有与该消费者有关的事件记录。", "No incidents concern this consumer."),
    "desk.no_scores": ("无评分记录。", "No scores."),
    "desk.no_lookups": (
        "近两年没有平台查询过该消费者。",
        "No platform looked this consumer up in two years.",
    ),
    "desk.category": ("类别", "Category"),
    "desk.confirmation": ("确认方式", "Confirmation"),
    "desk.amount": ("金额", "Amount"),
    "desk.occurred": ("发生时间", "Occurred"),
    "desk.reported": ("报告时间", "Reported"),
    "desk.status": ("状态", "Status"),
    "desk.platform": ("报告平台", "Reported by"),
    "desk.disputes": ("申诉", "Disputes"),
    "desk.none": ("无", "none"),
    "desk.score_line": ("评分 {score}，等级 {tier}", "Score {score}, tier {tier}"),
    "desk.restrictions": ("限制措施", "Restrictions"),
    "desk.policy": ("策略版本", "Policy version"),
    "desk.lookup_platform": ("查询平台", "Platform"),
    "desk.lookup_at": ("时间", "At"),
    "desk.lookup_purpose": ("用途", "Purpose"),
    "desk.print": ("打印", "Print"),
    "desk.new_search": ("查询另一位消费者", "Look up another consumer"),
    "desk.dispute_title": ("代消费者提出申诉", "Open a dispute for the consumer"),
    "desk.dispute_which": ("申诉的记录", "Entry to dispute"),
    "desk.dispute_all": ("全部可申诉的记录", "Every entry that can be disputed"),
    "desk.statement": ("消费者陈述（最多 500 字）", "The consumer's statement (at most 500 characters)"),
    "desk.contact_ref": ("联系单号（可选）", "Contact reference (optional)"),
    "desk.dispute_submit": ("提出申诉", "Open the dispute"),
    "desk.dispute_done": (
        "已提出 {n} 项申诉，报告平台须在 {by} 前答复。",
        "{n} disputes opened; the reporting platform must answer by {by}.",
    ),
    "desk.expired": (
        "会话中没有当前消费者，请重新输入标识。",
        "No consumer is selected in this session; enter the identifiers again.",
    ),
    "desk.invalid": ("第 {n} 项标识无效：{reason}", "Identifier {n} is invalid: {reason}"),
    "desk.empty": ("请至少输入一项标识。", "Enter at least one identifier."),
    # -- codes: identifier types
    "code.id_type.phone": ("手机号", "Phone"),
    "code.id_type.email": ("电子邮箱", "E-mail"),
    "code.id_type.id_card": ("居民身份证号", "Resident ID"),
    "code.id_type.payment_account": ("支付账户", "Payment account"),
    "code.id_type.device_id": ("设备号", "Device id"),
    # -- codes: console actions
    "code.action.sign_in": ("登录", "Sign in"),
    "code.action.sign_out": ("退出", "Sign out"),
    "code.action.create_platform": ("创建平台", "Create platform"),
    "code.action.issue_key": ("签发密钥", "Issue key"),
    "code.action.revoke_key": ("撤销密钥", "Revoke key"),
    "code.action.set_rate_limit": ("设置速率限制", "Set rate limit"),
    "code.action.set_trust": ("设置运营信任度", "Set operator trust"),
    "code.action.subject_report": ("查看个人报告", "View subject report"),
    "code.action.open_dispute": ("提出申诉", "Open dispute"),
    "code.outcome.ok": ("成功", "Done"),
    "code.outcome.refused": ("被拒绝", "Refused"),
    "code.outcome.failed": ("失败", "Failed"),
}


def text(key: str, lang: str, **values: object) -> str:
    """The message in `lang` (Chinese for an unknown language), with `{name}` fields filled in."""
    pair = MESSAGES.get(key)
    if pair is None:
        return key
    message = pair[1] if lang == "en" else pair[0]
    return message.format(**values) if values else message


def label(kind: str, code: str | None, lang: str) -> str:
    """The label of a stored code, or the code itself when no catalogue has one."""
    if code is None:
        return ""
    if kind in labels.KINDS:
        return labels.label(kind, code, "en" if lang == "en" else "zh")
    pair = MESSAGES.get(f"code.{kind}.{code}")
    if pair is None:
        return code
    return pair[1] if lang == "en" else pair[0]
