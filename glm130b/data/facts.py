"""Bilingual (English/Chinese) fact tables for the quickstart corpus and sample tasks.

Every relation has the same shape: rows of (subject_en, subject_zh, object_en, object_zh)
and several paraphrase templates per language. Each template ends with the object followed
only by punctuation, so one template serves both the corpus (the full sentence) and
evaluation (a prompt that stops right before the object, the object as the answer).
"""

import calendar
from dataclasses import dataclass
from typing import NamedTuple

LANGUAGES = ("en", "zh")

# Characters allowed after {o}: a template's tail must not carry words, or a generated
# answer would need more than the object to be judged correct.
_TAIL_CHARS = set(".?!\"'”’。？！")


class Row(NamedTuple):
    subject_en: str
    subject_zh: str
    object_en: str
    object_zh: str


@dataclass(frozen=True)
class Relation:
    name: str
    rows: tuple  # of Row: (subject_en, subject_zh, object_en, object_zh)
    templates_en: tuple  # of str with one {s} and a final {o}
    templates_zh: tuple

    def __post_init__(self):
        for template in self.templates_en + self.templates_zh:
            head, tail = split_template(template)
            if head.count("{s}") != 1:
                raise ValueError(f"{self.name}: template needs one {{s}} before {{o}}: "
                                 f"{template!r}")
        if not self.rows:
            raise ValueError(f"{self.name}: no rows")

    def templates(self, language: str) -> tuple:
        if language == "en":
            return self.templates_en
        if language == "zh":
            return self.templates_zh
        raise ValueError(f"unknown language {language!r}; expected one of {LANGUAGES}")


def split_template(template: str):
    """(text before {o}, punctuation after {o}); raises if the template is not object-final."""
    if template.count("{o}") != 1:
        raise ValueError(f"template needs exactly one {{o}}: {template!r}")
    head, tail = template.split("{o}")
    if not set(tail) <= _TAIL_CHARS:
        raise ValueError(f"only punctuation may follow {{o}}: {template!r}")
    return head, tail


def _capitalize_first(text: str) -> str:
    # Subjects such as "the sky" open some English sentences; Chinese is unaffected.
    return text[:1].upper() + text[1:]


def _language_offset(language: str) -> int:
    if language not in LANGUAGES:
        raise ValueError(f"unknown language {language!r}; expected one of {LANGUAGES}")
    return LANGUAGES.index(language)


# Indexing rather than attribute access, so that plain 4-tuples work as rows too.
def subject(row: Row, language: str) -> str:
    return row[_language_offset(language)]


def obj(row: Row, language: str) -> str:
    return row[2 + _language_offset(language)]


def render(relation: Relation, row: Row, language: str, template_index: int):
    """(prompt, answer): the sentence up to the object, and the object itself.

    The prompt keeps its trailing space ("The capital of France is "), so that
    prompt + answer + tail is exactly the corpus sentence.
    """
    head, _ = split_template(relation.templates(language)[template_index])
    prompt = _capitalize_first(head.replace("{s}", subject(row, language)))
    return prompt, obj(row, language)


def sentence(relation: Relation, row: Row, language: str, template_index: int) -> str:
    """The full sentence as it appears in the corpus."""
    template = relation.templates(language)[template_index]
    text = template.replace("{s}", subject(row, language)).replace("{o}", obj(row, language))
    return _capitalize_first(text)


def objects(relation: Relation, language: str) -> list:
    """Distinct objects of a relation, in table order: the natural multiple-choice pool."""
    return list(dict.fromkeys(obj(row, language) for row in relation.rows))


# --- Hand-written tables -----------------------------------------------------------------

# (country_en, country_zh, capital_en, capital_zh, continent_en, continent_zh)
COUNTRIES = (
    ("China", "中国", "Beijing", "北京", "Asia", "亚洲"),
    ("Japan", "日本", "Tokyo", "东京", "Asia", "亚洲"),
    ("South Korea", "韩国", "Seoul", "首尔", "Asia", "亚洲"),
    ("India", "印度", "New Delhi", "新德里", "Asia", "亚洲"),
    ("Thailand", "泰国", "Bangkok", "曼谷", "Asia", "亚洲"),
    ("Vietnam", "越南", "Hanoi", "河内", "Asia", "亚洲"),
    ("Indonesia", "印度尼西亚", "Jakarta", "雅加达", "Asia", "亚洲"),
    ("the Philippines", "菲律宾", "Manila", "马尼拉", "Asia", "亚洲"),
    ("Malaysia", "马来西亚", "Kuala Lumpur", "吉隆坡", "Asia", "亚洲"),
    ("Pakistan", "巴基斯坦", "Islamabad", "伊斯兰堡", "Asia", "亚洲"),
    ("Iran", "伊朗", "Tehran", "德黑兰", "Asia", "亚洲"),
    ("Saudi Arabia", "沙特阿拉伯", "Riyadh", "利雅得", "Asia", "亚洲"),
    ("Turkey", "土耳其", "Ankara", "安卡拉", "Asia", "亚洲"),
    ("Mongolia", "蒙古", "Ulaanbaatar", "乌兰巴托", "Asia", "亚洲"),
    ("Nepal", "尼泊尔", "Kathmandu", "加德满都", "Asia", "亚洲"),
    ("France", "法国", "Paris", "巴黎", "Europe", "欧洲"),
    ("Germany", "德国", "Berlin", "柏林", "Europe", "欧洲"),
    ("the United Kingdom", "英国", "London", "伦敦", "Europe", "欧洲"),
    ("Italy", "意大利", "Rome", "罗马", "Europe", "欧洲"),
    ("Spain", "西班牙", "Madrid", "马德里", "Europe", "欧洲"),
    ("Portugal", "葡萄牙", "Lisbon", "里斯本", "Europe", "欧洲"),
    ("the Netherlands", "荷兰", "Amsterdam", "阿姆斯特丹", "Europe", "欧洲"),
    ("Belgium", "比利时", "Brussels", "布鲁塞尔", "Europe", "欧洲"),
    ("Switzerland", "瑞士", "Bern", "伯尔尼", "Europe", "欧洲"),
    ("Austria", "奥地利", "Vienna", "维也纳", "Europe", "欧洲"),
    ("Sweden", "瑞典", "Stockholm", "斯德哥尔摩", "Europe", "欧洲"),
    ("Norway", "挪威", "Oslo", "奥斯陆", "Europe", "欧洲"),
    ("Finland", "芬兰", "Helsinki", "赫尔辛基", "Europe", "欧洲"),
    ("Denmark", "丹麦", "Copenhagen", "哥本哈根", "Europe", "欧洲"),
    ("Poland", "波兰", "Warsaw", "华沙", "Europe", "欧洲"),
    ("Greece", "希腊", "Athens", "雅典", "Europe", "欧洲"),
    ("Russia", "俄罗斯", "Moscow", "莫斯科", "Europe", "欧洲"),
    ("Ireland", "爱尔兰", "Dublin", "都柏林", "Europe", "欧洲"),
    ("Hungary", "匈牙利", "Budapest", "布达佩斯", "Europe", "欧洲"),
    ("Egypt", "埃及", "Cairo", "开罗", "Africa", "非洲"),
    ("Kenya", "肯尼亚", "Nairobi", "内罗毕", "Africa", "非洲"),
    ("Nigeria", "尼日利亚", "Abuja", "阿布贾", "Africa", "非洲"),
    ("Ethiopia", "埃塞俄比亚", "Addis Ababa", "亚的斯亚贝巴", "Africa", "非洲"),
    ("Morocco", "摩洛哥", "Rabat", "拉巴特", "Africa", "非洲"),
    ("Ghana", "加纳", "Accra", "阿克拉", "Africa", "非洲"),
    ("South Africa", "南非", "Pretoria", "比勒陀利亚", "Africa", "非洲"),
    ("the United States", "美国", "Washington", "华盛顿", "North America", "北美洲"),
    ("Canada", "加拿大", "Ottawa", "渥太华", "North America", "北美洲"),
    ("Mexico", "墨西哥", "Mexico City", "墨西哥城", "North America", "北美洲"),
    ("Cuba", "古巴", "Havana", "哈瓦那", "North America", "北美洲"),
    ("Brazil", "巴西", "Brasilia", "巴西利亚", "South America", "南美洲"),
    ("Argentina", "阿根廷", "Buenos Aires", "布宜诺斯艾利斯", "South America", "南美洲"),
    ("Chile", "智利", "Santiago", "圣地亚哥", "South America", "南美洲"),
    ("Peru", "秘鲁", "Lima", "利马", "South America", "南美洲"),
    ("Colombia", "哥伦比亚", "Bogota", "波哥大", "South America", "南美洲"),
    ("Australia", "澳大利亚", "Canberra", "堪培拉", "Oceania", "大洋洲"),
    ("New Zealand", "新西兰", "Wellington", "惠灵顿", "Oceania", "大洋洲"),
)

ANIMAL_SOUNDS = (
    ("dog", "狗", "barks", "汪汪叫"),
    ("cat", "猫", "meows", "喵喵叫"),
    ("cow", "牛", "moos", "哞哞叫"),
    ("sheep", "羊", "bleats", "咩咩叫"),
    ("duck", "鸭子", "quacks", "嘎嘎叫"),
    ("lion", "狮子", "roars", "吼叫"),
    ("pig", "猪", "oinks", "哼哼叫"),
    ("horse", "马", "neighs", "嘶鸣"),
    ("bee", "蜜蜂", "buzzes", "嗡嗡叫"),
    ("snake", "蛇", "hisses", "发出嘶嘶声"),
    ("wolf", "狼", "howls", "嚎叫"),
    ("frog", "青蛙", "croaks", "呱呱叫"),
    ("owl", "猫头鹰", "hoots", "咕咕叫"),
    ("rooster", "公鸡", "crows", "喔喔啼"),
    ("mouse", "老鼠", "squeaks", "吱吱叫"),
)

COLOURS = (
    ("the sky", "天空", "blue", "蓝色"),
    ("the sea", "大海", "blue", "蓝色"),
    ("grass", "草", "green", "绿色"),
    ("a frog", "青蛙", "green", "绿色"),
    ("snow", "雪", "white", "白色"),
    ("milk", "牛奶", "white", "白色"),
    ("a cloud", "云", "white", "白色"),
    ("blood", "血", "red", "红色"),
    ("a ripe tomato", "熟透的西红柿", "red", "红色"),
    ("a banana", "香蕉", "yellow", "黄色"),
    ("a lemon", "柠檬", "yellow", "黄色"),
    ("coal", "煤", "black", "黑色"),
    ("a crow", "乌鸦", "black", "黑色"),
    ("chocolate", "巧克力", "brown", "棕色"),
    ("a carrot", "胡萝卜", "orange", "橙色"),
    ("a pumpkin", "南瓜", "orange", "橙色"),
    ("an eggplant", "茄子", "purple", "紫色"),
    ("an elephant", "大象", "grey", "灰色"),
)

# Each pair is used in both directions.
ANTONYM_PAIRS = (
    ("hot", "热", "cold", "冷"),
    ("big", "大", "small", "小"),
    ("up", "上", "down", "下"),
    ("day", "白天", "night", "夜晚"),
    ("fast", "快", "slow", "慢"),
    ("high", "高", "low", "低"),
    ("long", "长", "short", "短"),
    ("old", "老", "young", "年轻"),
    ("open", "开", "closed", "关"),
    ("left", "左", "right", "右"),
    ("black", "黑", "white", "白"),
    ("early", "早", "late", "晚"),
    ("good", "好", "bad", "坏"),
    ("happy", "高兴", "sad", "难过"),
    ("inside", "里面", "outside", "外面"),
    ("heavy", "重", "light", "轻"),
    ("rich", "富", "poor", "穷"),
    ("buy", "买", "sell", "卖"),
)

# Spelled out rather than taken from calendar.month_name, which follows the process locale.
MONTHS = tuple(zip(
    ("January", "February", "March", "April", "May", "June",
     "July", "August", "September", "October", "November", "December"),
    ("一月", "二月", "三月", "四月", "五月", "六月",
     "七月", "八月", "九月", "十月", "十一月", "十二月"),
))

WEEKDAYS = (
    ("Monday", "星期一"), ("Tuesday", "星期二"), ("Wednesday", "星期三"), ("Thursday", "星期四"),
    ("Friday", "星期五"), ("Saturday", "星期六"), ("Sunday", "星期日"),
)

# Arithmetic operands stay small so that a tiny model can see every fact many times.
MAX_OPERAND = 10


# --- Rows generated by rule --------------------------------------------------------------

def _cyclic_next(items, step):
    n = len(items)
    return tuple(Row(*items[i], *items[(i + step) % n]) for i in range(n))


def _sums():
    return tuple(Row(f"{a} + {b}", f"{a}加{b}", str(a + b), str(a + b))
                 for a in range(MAX_OPERAND + 1) for b in range(MAX_OPERAND + 1))


def _differences():
    return tuple(Row(f"{a} - {b}", f"{a}减{b}", str(a - b), str(a - b))
                 for a in range(MAX_OPERAND + 1) for b in range(a + 1))


def _dates():
    # A non-leap year keeps the table free of the 29 February special case.
    return tuple((f"{MONTHS[m - 1][0]} {d}", f"{m}月{d}日")
                 for m in range(1, 13) for d in range(1, calendar.monthrange(2023, m)[1] + 1))


def _build_relations():
    countries = COUNTRIES
    dates = _dates()
    return (
        Relation(
            "capital",
            tuple(Row(c[0], c[1], c[2], c[3]) for c in countries),
            ("The capital of {s} is {o}.",
             "The capital city of {s} is {o}.",
             "{s} has its capital in {o}.",
             "Q: What is the capital of {s}? A: {o}."),
            ("{s}的首都是{o}。",
             "{s}的首都叫{o}。",
             "问：{s}的首都是哪里？答：{o}。"),
        ),
        Relation(
            "continent",
            tuple(Row(c[0], c[1], c[4], c[5]) for c in countries),
            ("{s} is in {o}.",
             "{s} is a country in {o}.",
             "The continent of {s} is {o}."),
            ("{s}位于{o}。",
             "{s}属于{o}。",
             "{s}所在的大洲是{o}。"),
        ),
        Relation(
            "animal_sound",
            tuple(Row(*r) for r in ANIMAL_SOUNDS),
            ("The {s} {o}.",
             "Every {s} {o}.",
             "Listen! The {s} {o}."),
            ("{s}会{o}。",
             "听！{s}在{o}。",
             "我们都知道{s}会{o}。"),
        ),
        Relation(
            "colour",
            tuple(Row(*r) for r in COLOURS),
            ("{s} is {o}.",
             "The color of {s} is {o}.",
             "Everyone knows that {s} is {o}."),
            ("{s}的颜色是{o}。",
             "{s}一般是{o}。",
             "大家都知道{s}是{o}。"),
        ),
        Relation(
            "antonym",
            tuple(Row(*p) for p in ANTONYM_PAIRS)
            + tuple(Row(p[2], p[3], p[0], p[1]) for p in ANTONYM_PAIRS),
            ("The opposite of {s} is {o}.",
             "The antonym of \"{s}\" is \"{o}\".",
             "What is the opposite of {s}? It is {o}."),
            ("{s}的反义词是{o}。",
             "“{s}”的反义词是“{o}”。",
             "{s}的反面是{o}。"),
        ),
        Relation(
            "month_after",
            _cyclic_next(MONTHS, 1),
            ("The month after {s} is {o}.",
             "After {s} comes {o}.",
             "When {s} ends, the next month is {o}."),
            ("{s}的下一个月是{o}。",
             "{s}之后是{o}。",
             "{s}过完了就是{o}。"),
        ),
        Relation(
            "month_before",
            _cyclic_next(MONTHS, -1),
            ("The month before {s} is {o}.",
             "Just before {s} comes {o}.",
             "The month that comes before {s} is {o}."),
            ("{s}的上一个月是{o}。",
             "{s}之前是{o}。",
             "{s}前面的月份是{o}。"),
        ),
        Relation(
            "month_number",
            tuple(Row(en, zh, str(i), str(i)) for i, (en, zh) in enumerate(MONTHS, 1)),
            ("{s} is month number {o}.",
             "In the calendar, {s} is month {o}.",
             "The number of the month {s} is {o}."),
            ("{s}在一年中排第{o}。",
             "{s}的月份序号是{o}。",
             "在日历上，{s}排在第{o}。"),
        ),
        Relation(
            "weekday_after",
            _cyclic_next(WEEKDAYS, 1),
            ("The day after {s} is {o}.",
             "If today is {s}, tomorrow is {o}.",
             "After {s} comes {o}."),
            ("{s}的后一天是{o}。",
             "如果今天是{s}，明天就是{o}。",
             "{s}之后是{o}。"),
        ),
        Relation(
            "weekday_before",
            _cyclic_next(WEEKDAYS, -1),
            ("The day before {s} is {o}.",
             "If today is {s}, yesterday was {o}.",
             "Just before {s} comes {o}."),
            ("{s}的前一天是{o}。",
             "如果今天是{s}，昨天就是{o}。",
             "{s}之前是{o}。"),
        ),
        Relation(
            "date_after",
            _cyclic_next(dates, 1),
            ("The day after {s} is {o}.",
             "If today is {s}, tomorrow is {o}.",
             "One day after {s} it is {o}."),
            ("{s}的后一天是{o}。",
             "如果今天是{s}，明天就是{o}。",
             "{s}的第二天是{o}。"),
        ),
        Relation(
            "date_before",
            _cyclic_next(dates, -1),
            ("The day before {s} is {o}.",
             "If today is {s}, yesterday was {o}.",
             "One day before {s} it was {o}."),
            ("{s}的前一天是{o}。",
             "如果今天是{s}，昨天就是{o}。",
             "{s}的头一天是{o}。"),
        ),
        Relation(
            "addition",
            _sums(),
            ("{s} = {o}.",
             "{s} equals {o}.",
             "What is {s}? The answer is {o}."),
            ("{s}等于{o}。",
             "{s}的结果是{o}。",
             "问：{s}等于几？答：{o}。"),
        ),
        Relation(
            "subtraction",
            _differences(),
            ("{s} = {o}.",
             "{s} equals {o}.",
             "What is {s}? The answer is {o}."),
            ("{s}等于{o}。",
             "{s}的结果是{o}。",
             "问：{s}等于几？答：{o}。"),
        ),
    )


_RELATIONS = _build_relations()
_BY_NAME = {r.name: r for r in _RELATIONS}


def relations() -> tuple:
    """All relations, in a fixed order."""
    return _RELATIONS


def get_relation(name: str) -> Relation:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown relation {name!r}; known: {', '.join(_BY_NAME)}") from None
