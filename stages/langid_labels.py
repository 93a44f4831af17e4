"""GlotLID's labels (``eng_Latn``: an ISO 639-3 code and an ISO 15924 script) as the language codes
of the language files (``stages/langid.py``).

A label maps to the ISO 639-1 code of its language where one exists (``eng_Latn`` -> ``en``; an
individual language of a macrolanguage that has one, to the macrolanguage's: ``arb_Arab`` ->
``ar``, ``cmn_Hani`` -> ``zh``), named as lid.176 names it where the two differ (``nob_Latn`` ->
``no``), so GlotLID and lid.176 runs share one set of language files; otherwise the label itself
(``ceb_Latn``: a file ``ceb_Latn.yaml``). The script is kept apart (the ``language_script``
column). A label without a script (lid.176's ``en``) is its own language code.
"""
from __future__ import annotations

import re

#: ISO 639-3 -> ISO 639-1, every language that has both (generated from pycountry 26.2.16's ISO 639-3
#: table: ``{l.alpha_3: l.alpha_2 for l in pycountry.languages if hasattr(l, "alpha_2")}``)
ISO639_3_TO_1 = {
    "aar": "aa", "abk": "ab", "afr": "af", "aka": "ak", "amh": "am", "ara": "ar", "arg": "an", "asm": "as",
    "ava": "av", "ave": "ae", "aym": "ay", "aze": "az", "bak": "ba", "bam": "bm", "bel": "be", "ben": "bn",
    "bis": "bi", "bod": "bo", "bos": "bs", "bre": "br", "bul": "bg", "cat": "ca", "ces": "cs", "cha": "ch",
    "che": "ce", "chu": "cu", "chv": "cv", "cor": "kw", "cos": "co", "cre": "cr", "cym": "cy", "dan": "da",
    "deu": "de", "div": "dv", "dzo": "dz", "ell": "el", "eng": "en", "epo": "eo", "est": "et", "eus": "eu",
    "ewe": "ee", "fao": "fo", "fas": "fa", "fij": "fj", "fin": "fi", "fra": "fr", "fry": "fy", "ful": "ff",
    "gla": "gd", "gle": "ga", "glg": "gl", "glv": "gv", "grn": "gn", "guj": "gu", "hat": "ht", "hau": "ha",
    "hbs": "sh", "heb": "he", "her": "hz", "hin": "hi", "hmo": "ho", "hrv": "hr", "hun": "hu", "hye": "hy",
    "ibo": "ig", "ido": "io", "iii": "ii", "iku": "iu", "ile": "ie", "ina": "ia", "ind": "id", "ipk": "ik",
    "isl": "is", "ita": "it", "jav": "jv", "jpn": "ja", "kal": "kl", "kan": "kn", "kas": "ks", "kat": "ka",
    "kau": "kr", "kaz": "kk", "khm": "km", "kik": "ki", "kin": "rw", "kir": "ky", "kom": "kv", "kon": "kg",
    "kor": "ko", "kua": "kj", "kur": "ku", "lao": "lo", "lat": "la", "lav": "lv", "lim": "li", "lin": "ln",
    "lit": "lt", "ltz": "lb", "lub": "lu", "lug": "lg", "mah": "mh", "mal": "ml", "mar": "mr", "mkd": "mk",
    "mlg": "mg", "mlt": "mt", "mon": "mn", "mri": "mi", "msa": "ms", "mya": "my", "nau": "na", "nav": "nv",
    "nbl": "nr", "nde": "nd", "ndo": "ng", "nep": "ne", "nld": "nl", "nno": "nn", "nob": "nb", "nor": "no",
    "nya": "ny", "oci": "oc", "oji": "oj", "ori": "or", "orm": "om", "oss": "os", "pan": "pa", "pli": "pi",
    "pol": "pl", "por": "pt", "pus": "ps", "que": "qu", "roh": "rm", "ron": "ro", "run": "rn", "rus": "ru",
    "sag": "sg", "san": "sa", "sin": "si", "slk": "sk", "slv": "sl", "sme": "se", "smo": "sm", "sna": "sn",
    "snd": "sd", "som": "so", "sot": "st", "spa": "es", "sqi": "sq", "srd": "sc", "srp": "sr", "ssw": "ss",
    "sun": "su", "swa": "sw", "swe": "sv", "tah": "ty", "tam": "ta", "tat": "tt", "tel": "te", "tgk": "tg",
    "tgl": "tl", "tha": "th", "tir": "ti", "ton": "to", "tsn": "tn", "tso": "ts", "tuk": "tk", "tur": "tr",
    "twi": "tw", "uig": "ug", "ukr": "uk", "urd": "ur", "uzb": "uz", "ven": "ve", "vie": "vi", "vol": "vo",
    "wln": "wa", "wol": "wo", "xho": "xh", "yid": "yi", "yor": "yo", "zha": "za", "zho": "zh", "zul": "zu",
}
#: individual languages GlotLID labels that belong to a macrolanguage with an ISO 639-1 code
#: (ISO 639-3 macrolanguage mappings; the ones FineWeb-2's language list uses)
MACROLANGUAGE_MEMBERS = {
    "arb": "ar", "cmn": "zh", "zsm": "ms", "pes": "fa", "swh": "sw", "ekk": "et", "lvs": "lv", "uzn": "uz",
    "azj": "az", "npi": "ne", "khk": "mn", "ory": "or", "plt": "mg", "gaz": "om", "als": "sq", "ydd": "yi",
    "kmr": "ku", "pbt": "ps", "quz": "qu", "gug": "gn", "zlm": "ms",
}
#: ISO 639-1 codes lid.176 writes differently (its labels name the shipped language files)
LID176_NAMES = {"nb": "no"}
_LABEL = re.compile(r"^([a-z]{2,3})_([A-Z][a-z]{3})$")


def split_label(label: str) -> tuple[str, str | None]:
    """(language code of the language files, ISO 15924 script or None) of a model's label."""
    m = _LABEL.match(label)
    if not m:
        return label, None
    code, script = m.groups()
    short = ISO639_3_TO_1.get(code) or MACROLANGUAGE_MEMBERS.get(code)
    return (LID176_NAMES.get(short, short) if short else label), script
