"""The pages' words in Chinese and English: one catalogue per language, the same keys in
each (a unit test checks), and which language a request gets.

zh-CN is the default; ``?lang=en`` (or ``zh-CN``) switches and is remembered in a cookie,
so a link followed later keeps the reader's language. A dict per language keeps the
catalogue reviewable in one screen; gettext would add a build step for some sixty strings.
"""

from __future__ import annotations

from aiohttp import web

DEFAULT = "zh-CN"
LANGUAGES = ("zh-CN", "en")
COOKIE = "idnode_lang"
# A year: a reader's choice outlives a browser restart.
COOKIE_MAX_AGE = 365 * 24 * 3600

MESSAGES: dict[str, dict[str, str]] = {
    "zh-CN": {
        "site_name": "标识解析二级节点",
        "language": "语言",
        "search_title": "标识解析",
        "search_intro": "输入一个标识（如 88.166/ABC-001），查看它指向的地址或它的记录。",
        "search_label": "标识",
        "search_placeholder": "前缀/后缀，例如 88.166/ABC-001",
        "search_button": "解析",
        "search_show_record": "不跳转，显示记录",
        "search_by_value": "按值搜索",
        "search_results": "搜索结果",
        "search_none": "没有找到匹配的标识。",
        "search_empty": "请输入一个标识。",
        "record_title": "标识记录",
        "record_values": "共 {n} 个值",
        "col_index": "索引",
        "col_type": "类型",
        "col_timestamp": "时间戳",
        "col_ttl": "TTL（秒）",
        "col_data": "数据",
        "ttl_absolute": "到期于 {when}",
        "no_values": "没有符合条件的值。",
        "filter_note": "只显示所选的值：",
        "show_all": "显示全部",
        "json_link": "JSON（REST API）",
        "auth_link": "以管理员身份查看",
        "auth_as": "已认证为 {who}，显示非公开值。",
        "not_public": "非公开",
        "alias_via": "经别名到达：",
        "binary": "二进制，{n} 字节",
        "admin_handle": "管理员",
        "admin_permissions": "权限",
        "vlist_members": "成员",
        "site_servers": "服务器",
        "site_serial": "序列号",
        "key_type": "公钥",
        "perm.ADD_HANDLE": "创建标识",
        "perm.DELETE_HANDLE": "删除标识",
        "perm.ADD_DERIVED_PREFIX": "创建子前缀",
        "perm.DELETE_DERIVED_PREFIX": "删除子前缀",
        "perm.MODIFY_VALUE": "修改值",
        "perm.REMOVE_VALUE": "删除值",
        "perm.ADD_VALUE": "添加值",
        "perm.MODIFY_ADMIN": "修改管理员",
        "perm.REMOVE_ADMIN": "删除管理员",
        "perm.ADD_ADMIN": "添加管理员",
        "perm.AUTHORIZED_READ": "读取非公开值",
        "perm.LIST_HANDLES": "列出标识",
        "not_found_title": "标识不存在",
        "not_found_text": "本节点上没有标识 {handle}。",
        "not_homed_title": "不在本节点",
        "not_homed_text": "标识 {handle} 的前缀不由本节点管理。",
        "referral_text": "请到以下位置解析：",
        "referral_handle": "服务信息所在标识",
        "invalid_title": "标识无效",
        "error_title": "解析出错",
        "unavailable_title": "暂时无法解析",
        "unavailable_text": "注册库暂时不可用，请稍后重试。",
        "alias_loop_title": "别名循环",
        "alias_loop_text": "别名链回到了已经访问过的标识：{chain}",
        "alias_depth_title": "别名链过长",
        "alias_depth_text": "别名链超过 {n} 步：{chain}",
        "auth_title": "需要认证",
        "auth_text": "查看非公开值需要管理员凭据（用户名为 索引:标识，如 300:0.NA/88.166）。",
        "auth_failed": "认证失败：{message}",
        "page_not_found_title": "页面不存在",
        "back_home": "返回首页",
        "footer": "本页面由标识解析节点直接提供。",
    },
    "en": {
        "site_name": "Identifier resolution node",
        "language": "Language",
        "search_title": "Resolve an identifier",
        "search_intro": "Type an identifier (such as 88.166/ABC-001) to go where it "
        "points, or to see its record.",
        "search_label": "Identifier",
        "search_placeholder": "prefix/suffix, e.g. 88.166/ABC-001",
        "search_button": "Resolve",
        "search_show_record": "Show the record, do not redirect",
        "search_by_value": "Search by value",
        "search_results": "Search results",
        "search_none": "No identifier matches.",
        "search_empty": "Please type an identifier.",
        "record_title": "Handle record",
        "record_values": "{n} values",
        "col_index": "Index",
        "col_type": "Type",
        "col_timestamp": "Timestamp",
        "col_ttl": "TTL (s)",
        "col_data": "Data",
        "ttl_absolute": "expires {when}",
        "no_values": "No values match.",
        "filter_note": "Only the values asked for:",
        "show_all": "show all",
        "json_link": "JSON (REST API)",
        "auth_link": "View as an administrator",
        "auth_as": "Authenticated as {who}: non-public values are shown.",
        "not_public": "not public",
        "alias_via": "Reached through aliases:",
        "binary": "binary, {n} bytes",
        "admin_handle": "Administrator",
        "admin_permissions": "Permissions",
        "vlist_members": "Members",
        "site_servers": "Servers",
        "site_serial": "Serial",
        "key_type": "Public key",
        "perm.ADD_HANDLE": "add handle",
        "perm.DELETE_HANDLE": "delete handle",
        "perm.ADD_DERIVED_PREFIX": "add derived prefix",
        "perm.DELETE_DERIVED_PREFIX": "delete derived prefix",
        "perm.MODIFY_VALUE": "modify value",
        "perm.REMOVE_VALUE": "remove value",
        "perm.ADD_VALUE": "add value",
        "perm.MODIFY_ADMIN": "modify admin",
        "perm.REMOVE_ADMIN": "remove admin",
        "perm.ADD_ADMIN": "add admin",
        "perm.AUTHORIZED_READ": "read non-public values",
        "perm.LIST_HANDLES": "list handles",
        "not_found_title": "Handle not found",
        "not_found_text": "This node has no handle {handle}.",
        "not_homed_title": "Not served here",
        "not_homed_text": "The prefix of {handle} is not homed on this node.",
        "referral_text": "Ask here instead:",
        "referral_handle": "Service information in",
        "invalid_title": "Invalid handle",
        "error_title": "Resolution failed",
        "unavailable_title": "Temporarily unavailable",
        "unavailable_text": "The registry is unavailable; please try again shortly.",
        "alias_loop_title": "Alias loop",
        "alias_loop_text": "The alias chain comes back to a handle it passed: {chain}",
        "alias_depth_title": "Alias chain too long",
        "alias_depth_text": "The alias chain is longer than {n} steps: {chain}",
        "auth_title": "Authentication required",
        "auth_text": "Non-public values need an administrator's credentials (user name "
        "index:handle, such as 300:0.NA/88.166).",
        "auth_failed": "Authentication failed: {message}",
        "page_not_found_title": "No such page",
        "back_home": "Home",
        "footer": "Served by the identifier resolution node itself.",
    },
}


# The console's words live in their own module (one block per feature, fewer collisions).
from .console_words import WORDS as _CONSOLE_WORDS  # noqa: E402

for _lang, _words in _CONSOLE_WORDS.items():
    MESSAGES[_lang].update(_words)

# The console's tool pages (batch upload, API keys, templates, applications).
from .console_tools_words import WORDS as _TOOLS_WORDS  # noqa: E402

for _lang, _words in _TOOLS_WORDS.items():
    MESSAGES[_lang].update(_words)

# The operator dashboard's words.
from .dashboard_words import WORDS as _DASHBOARD_WORDS  # noqa: E402

for _lang, _words in _DASHBOARD_WORDS.items():
    MESSAGES[_lang].update(_words)


class Translator:
    """One request's words: ``t("key", n=3)`` formats the catalogue entry."""

    def __init__(self, language: str) -> None:
        self.language = language
        self.messages = MESSAGES[language]

    def __call__(self, key: str, **fields: object) -> str:
        text = self.messages.get(key) or MESSAGES[DEFAULT].get(key, key)
        return text.format(**fields) if fields else text


# An HS_ADMIN's permissions by name ("ADD_VALUE" -> "添加值"): up to twelve a row, read
# by the record page as plain items of a dict built once, not through ``t()``.
PERMISSION_WORDS = {
    lang: {
        key.removeprefix("perm."): Translator(lang)(key)
        for key in MESSAGES[DEFAULT]
        if key.startswith("perm.")
    }
    for lang in LANGUAGES
}


def choose(request: web.Request) -> tuple[str, bool]:
    """The request's language, and whether it was chosen by ``?lang=`` (to remember)."""
    asked = request.query.get("lang", "")
    for lang in LANGUAGES:
        if asked.lower() == lang.lower():
            return lang, True
    kept = request.cookies.get(COOKIE, "")
    return (kept if kept in LANGUAGES else DEFAULT), False


def remember(response: web.StreamResponse, request: web.Request, language: str) -> None:
    response.set_cookie(
        COOKIE,
        language,
        max_age=COOKIE_MAX_AGE,
        path="/",
        samesite="Lax",
        secure=request.secure,  # over TLS (behind a proxy that says so) never sent plain
        httponly=True,
    )
