"""places: countries, states and address texts as CRM exports write them, resolved to ISO 3166 codes."""

from __future__ import annotations

import collections
import difflib
import json
from importlib import resources

import pycountry
import pytest
from hypothesis import given
from hypothesis import strategies as st

from assignment_engine.tables import places
from assignment_engine.tables.places import Resolved, country_code, split_address, subdivision_code

COUNTRIES = list(pycountry.countries)
VARIANTS = json.loads(resources.files("assignment_engine").joinpath("data", "place_variants.json").read_text(encoding="utf-8"))
ANCHORED_SUBDIVISIONS = [s for s in pycountry.subdivisions if s.country_code in ("US", "CA", "AU")]


def test_the_extra_is_named_when_missing():
    assert places.available()
    assert "pip install 'assignment-engine[places]'" in places.MISSING_EXTRA


@pytest.mark.parametrize(
    "value, code",
    [
        ("US", "US"),
        ("us", "US"),
        ("USA", "US"),
        ("usa", "US"),
        ("840", "US"),
        ("004", "AF"),
        ("4", "AF"),  # a spreadsheet dropped the zeros
        (" DEU ", "DE"),
        ("XK", "XK"),
        ("XKX", "XK"),
    ],
)
def test_codes_of_every_kind_and_case(value, code):
    assert country_code(value) == Resolved(code)


@pytest.mark.parametrize(
    "value, code",
    [
        ("United States", "US"),  # ISO name
        ("United States of America", "US"),  # official name
        ("Korea, Republic of", "KR"),
        ("South Korea", "KR"),  # common name
        ("Republic of Korea", "KR"),  # 'X, Y' read as 'Y X'
        ("Democratic Republic of the Congo", "CD"),
        ("British Virgin Islands", "VG"),
        ("U.S. Virgin Islands", "VI"),
        ("Falkland Islands", "FK"),  # without ISO's qualifier
        ("Holy See", "VA"),
        ("Czech Republic", "CZ"),
        ("Czechia", "CZ"),
        ("Türkiye", "TR"),
        ("Viet Nam", "VN"),
    ],
)
def test_iso_names_official_and_common(value, code):
    assert country_code(value).code == code


@pytest.mark.parametrize(
    "value, code",
    [
        ("U.S.", "US"),
        ("U.S.A.", "US"),
        ("America", "US"),
        ("UK", "GB"),
        ("U.K.", "GB"),
        ("Great Britain", "GB"),
        ("England", "GB"),
        ("Scotland", "GB"),
        ("Wales", "GB"),
        ("Northern Ireland", "GB"),
        ("Korea", "KR"),
        ("North Korea", "KP"),
        ("Russia", "RU"),
        ("Vietnam", "VN"),
        ("Iran", "IR"),
        ("Syria", "SY"),
        ("Laos", "LA"),
        ("Bolivia", "BO"),
        ("Venezuela", "VE"),
        ("Tanzania", "TZ"),
        ("Moldova", "MD"),
        ("Holland", "NL"),
        ("The Netherlands", "NL"),
        ("Turkey", "TR"),
        ("Ivory Coast", "CI"),
        ("Cape Verde", "CV"),
        ("Swaziland", "SZ"),
        ("Macedonia", "MK"),
        ("Burma", "MM"),
        ("UAE", "AE"),
        ("Hong Kong", "HK"),
        ("Taiwan", "TW"),
        ("Palestine", "PS"),
        ("Kosovo", "XK"),
        ("Vatican", "VA"),
        ("Deutschland", "DE"),
        ("España", "ES"),
    ],
)
def test_variants_exports_use(value, code):
    assert country_code(value) == Resolved(code)


@pytest.mark.parametrize(
    "value, code",
    [
        ("UNITED  STATES", "US"),
        ("  united states\t", "US"),
        ("Cote d'Ivoire", "CI"),  # no accent
        ("Côte d’Ivoire", "CI"),  # typographic apostrophe
        ("CÔTE D'IVOIRE", "CI"),
        ("Trinidad & Tobago", "TT"),
        ("Bosnia & Herzegovina", "BA"),
        ("the Bahamas", "BS"),
        ("St. Lucia", "LC"),
        ("St Kitts & Nevis", "KN"),
        ("Guinea Bissau", "GW"),  # ISO writes Guinea-Bissau
        ("Korea (South)", "KR"),
    ],
)
def test_case_accents_punctuation_and_words_that_do_not_matter(value, code):
    assert country_code(value).code == code


def test_misspellings_are_not_corrected_but_suggested():
    assert country_code("Philipines") == Resolved(None, "PH (Philippines)")
    assert country_code("Germny") == Resolved(None, "DE (Germany)")
    assert country_code("Nigera") == Resolved(None, "NG (Nigeria) or NE (Niger)")
    assert country_code("Kosvo") == Resolved(None, "XK (Kosovo)")
    assert country_code("Untied Kingdom").suggestion == "GB (United Kingdom)"


@given(st.sampled_from([c.name for c in COUNTRIES]), st.integers(0, 60), st.sampled_from(["", "x", "xx", "xyz"]), st.booleans())
def test_suggestions_look_only_at_names_of_near_length_and_miss_none(name, at, inserted, drop):
    value = name[:at] + inserted + name[at + drop :]
    table = places._countries().table
    key = places._normalise(value)
    every = [k for k in table.index if len(k) >= 4]
    close = difflib.get_close_matches(key, every, n=3, cutoff=0.8) if len(key) >= 4 and key not in table.index else []
    codes = dict.fromkeys(code for match in close for code in sorted(table.index[match]))
    assert country_code(value).suggestion == (" or ".join(table.labels[code] for code in codes) or None)


@pytest.mark.parametrize("value", ["", "   ", "XX", "ZZZ", "999", "Atlantis", "4.0", "12345", "9" * 5000, "\x00", "--"])
def test_unknown_values_resolve_to_nothing(value):
    assert country_code(value) == Resolved(None)


def test_every_variant_resolves_to_its_country():
    variants = VARIANTS["countries"]
    assert set(variants) - {c.alpha_2 for c in COUNTRIES} == {"XK"}  # Kosovo, the one user-assigned code CRMs all use
    for code, spellings in variants.items():
        for spelling in spellings:
            assert country_code(spelling) == Resolved(code), spelling


def test_every_iso_code_and_name_resolves_to_its_country():
    for country in COUNTRIES:
        for value in (country.alpha_2, country.alpha_3, country.numeric, country.name, country.alpha_2.lower(), country.name.upper()):
            assert country_code(value) == Resolved(country.alpha_2), value
        for field in ("official_name", "common_name"):
            if hasattr(country, field):
                assert country_code(getattr(country, field)) == Resolved(country.alpha_2), getattr(country, field)


@given(st.sampled_from(COUNTRIES), st.sampled_from(["alpha_2", "alpha_3", "name", "official_name", "common_name"]), st.data())
def test_any_spelling_of_any_country_resolves(country, field, data):
    value = getattr(country, field, country.name)
    cased = "".join(data.draw(st.sampled_from([char.lower(), char.upper()])) for char in value)
    padding = data.draw(st.sampled_from(["", " ", "  ", "\t"]))
    assert country_code(padding + cased + padding).code == country.alpha_2


@given(
    st.one_of(st.text(max_size=30), st.sampled_from([c.name for c in COUNTRIES] + [s for v in VARIANTS["countries"].values() for s in v]))
)
def test_resolving_is_idempotent(value):
    code = country_code(value).code
    if code is not None:
        assert country_code(code) == Resolved(code)


@pytest.mark.parametrize(
    "country, value, code",
    [
        ("US", "California", "CA"),
        ("US", "california", "CA"),
        ("US", "CA", "CA"),
        ("US", "ca", "CA"),
        ("US", "US-CA", "CA"),
        ("US", "us-ca", "CA"),
        ("US", "Calif.", "CA"),
        ("US", "Mass", "MA"),
        ("US", "District of Columbia", "DC"),
        ("US", "D.C.", "DC"),
        ("US", "Washington, D.C.", "DC"),
        ("US", "Puerto Rico", "PR"),
        ("US", "PR", "PR"),
        ("US", "Guam", "GU"),
        ("US", "US Virgin Islands", "VI"),
        ("United States", "Texas", "TX"),  # the country as any spelling country_code takes
        ("CA", "Ontario", "ON"),
        ("CA", "Québec", "QC"),
        ("CA", "Quebec", "QC"),
        ("CA", "PQ", "QC"),
        ("CA", "Newfoundland", "NL"),
        ("CA", "Yukon", "YT"),
        ("AU", "New South Wales", "NSW"),
        ("AU", "new south wales", "NSW"),
        ("AU", "N.S.W.", "NSW"),
        ("AU", "Qld", "QLD"),
        ("AU", "Australian Capital Territory", "ACT"),
        ("DE", "Bayern", "BY"),
        ("ES", "La Coruña", "C"),  # ISO's bracketed alternative
        ("ES", "Comunidad de Madrid", "MD"),  # 'Madrid, Comunidad de' read the other way
        ("GB", "Sir Ynys Môn", "AGY"),
        ("BD", "Dhaka", "C"),  # the division, not its district of the same name
    ],
)
def test_subdivisions_from_codes_and_names(country, value, code):
    assert subdivision_code(country, value) == Resolved(code)


def test_every_subdivision_code_of_every_country_resolves():
    for subdivision in pycountry.subdivisions:
        country, code = subdivision.code.split("-")
        assert subdivision_code(country, subdivision.code) == Resolved(code)
        assert subdivision_code(country, code) == Resolved(code)


def test_every_subdivision_name_resolves_unless_two_share_it():
    shared = collections.Counter((s.country_code, places._normalise(s.name)) for s in pycountry.subdivisions)
    for subdivision in pycountry.subdivisions:
        if shared[subdivision.country_code, places._normalise(subdivision.name)] == 1:
            assert subdivision_code(subdivision.country_code, subdivision.name).code == subdivision.code.split("-")[1], subdivision.name


def test_a_name_two_subdivisions_share_is_not_guessed():
    assert subdivision_code("EE", "Tartu") == Resolved(None, "793 (Tartu) or 796 (Tartu)")


@given(st.sampled_from(ANCHORED_SUBDIVISIONS), st.sampled_from(["code", "suffix", "name"]), st.booleans())
def test_every_us_canadian_and_australian_subdivision_resolves(subdivision, form, upper):
    country, code = subdivision.code.split("-")
    value = {"code": subdivision.code, "suffix": code, "name": subdivision.name}[form]
    assert subdivision_code(country, value.upper() if upper else value.lower()) == Resolved(code)


def test_without_a_country_only_what_is_unambiguous_across_us_canada_and_australia():
    assert subdivision_code(None, "Texas") == Resolved("TX")
    assert subdivision_code(None, "Victoria") == Resolved("VIC")
    assert subdivision_code(None, "Ontario") == Resolved("ON")
    assert subdivision_code(None, "PQ") == Resolved("QC")
    assert subdivision_code(None, "AU-WA") == Resolved("WA")
    assert subdivision_code("", "Texas") == Resolved("TX")
    assert subdivision_code(None, "WA") == Resolved(None, "WA (Western Australia, AU) or WA (Washington, US)")
    assert subdivision_code(None, "NT") == Resolved(None, "NT (Northern Territory, AU) or NT (Northwest Territories, CA)")
    assert subdivision_code(None, "Bayern") == Resolved(None)


def test_unknown_subdivisions_suggest_among_the_countrys():
    assert subdivision_code("US", "Califrnia") == Resolved(None, "CA (California)")
    assert subdivision_code("AU", "Tasmnia") == Resolved(None, "TAS (Tasmania)")
    assert subdivision_code(None, "Onatrio") == Resolved(None, "ON (Ontario, CA)")
    assert subdivision_code("US", "ZZ") == Resolved(None)
    assert subdivision_code("CA", "Texas") == Resolved(None)


def test_a_country_unknown_or_without_subdivisions_resolves_nothing():
    assert subdivision_code("Atlantis", "CA") == Resolved(None)
    assert subdivision_code("AQ", "CA") == Resolved(None)  # Antarctica: ISO lists no subdivisions


US_ONE = {"street": "123 Main St", "city": "Springfield", "state": "IL", "postal_code": "62704", "country": None}


@pytest.mark.parametrize(
    "text, expected",
    [
        ("123 Main St, Springfield, IL 62704", US_ONE),
        ("123 Main St\nSpringfield, IL 62704", US_ONE),
        ("123 Main St\r\nSpringfield IL 62704", US_ONE),
        ("123 Main St, Springfield, IL, 62704", US_ONE),
        (
            "Suite 100, 123 Main St, Springfield, Illinois 62704-1234, USA",
            {"street": "Suite 100, 123 Main St", "city": "Springfield", "state": "Illinois", "postal_code": "62704-1234", "country": "USA"},
        ),
        ("Springfield, IL 62704", {**US_ONE, "street": None}),
        ("New York NY 10001", {"street": None, "city": "New York", "state": "NY", "postal_code": "10001", "country": None}),
        (
            "1600 Pennsylvania Avenue NW\nWashington, DC 20500\nUnited States",
            {
                "street": "1600 Pennsylvania Avenue NW",
                "city": "Washington",
                "state": "DC",
                "postal_code": "20500",
                "country": "United States",
            },
        ),
        (
            "290 Bremner Blvd, Toronto, ON M5V 3L9, Canada",
            {"street": "290 Bremner Blvd", "city": "Toronto", "state": "ON", "postal_code": "M5V 3L9", "country": "Canada"},
        ),
        ("Ottawa ON K1A0B1", {"street": None, "city": "Ottawa", "state": "ON", "postal_code": "K1A0B1", "country": None}),
        (
            "Level 5, 1 Martin Pl, Sydney NSW 2000, Australia",
            {"street": "Level 5, 1 Martin Pl", "city": "Sydney", "state": "NSW", "postal_code": "2000", "country": "Australia"},
        ),
        (
            "Sydney New South Wales 2000",
            {"street": None, "city": "Sydney", "state": "New South Wales", "postal_code": "2000", "country": None},
        ),
    ],
)
def test_north_american_and_australian_layout(text, expected):
    assert split_address(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "10 Downing Street, London, SW1A 2AA, United Kingdom",
            {"street": "10 Downing Street", "city": "London", "state": None, "postal_code": "SW1A 2AA", "country": "United Kingdom"},
        ),
        (
            "10 Downing Street\nLondon SW1A 2AA",
            {"street": "10 Downing Street", "city": "London", "state": None, "postal_code": "SW1A 2AA", "country": None},
        ),
        (
            "Flat 2, 1 High St, Manchester, m11ae",
            {"street": "Flat 2, 1 High St", "city": "Manchester", "state": None, "postal_code": "m11ae", "country": None},
        ),
    ],
)
def test_british_layout(text, expected):
    assert split_address(text) == expected


@pytest.mark.parametrize(
    "text, street, postal_code, city, country",
    [
        ("Hauptstraße 5, 10115 Berlin, Germany", "Hauptstraße 5", "10115", "Berlin", "Germany"),
        ("Hauptstraße 5\nD-10115 Berlin", "Hauptstraße 5", "D-10115", "Berlin", None),
        ("Bahnhofstrasse 1, CH-8001 Zürich, Schweiz", "Bahnhofstrasse 1", "CH-8001", "Zürich", "Schweiz"),
        ("Stephansplatz 1, 1010 Wien, Österreich", "Stephansplatz 1", "1010", "Wien", "Österreich"),
        ("Rue de Rivoli 1, 75001 Paris", "Rue de Rivoli 1", "75001", "Paris", None),
        ("Damrak 1, 1012 AB Amsterdam, Netherlands", "Damrak 1", "1012 AB", "Amsterdam", "Netherlands"),
        ("ul. Marszałkowska 1, 00-950 Warszawa, Polska", "ul. Marszałkowska 1", "00-950", "Warszawa", "Polska"),
        ("Av. da Liberdade 1, 1250-001 Lisboa, Portugal", "Av. da Liberdade 1", "1250-001", "Lisboa", "Portugal"),
        ("10115 Berlin, Germany", None, "10115", "Berlin", "Germany"),
        ("Hauptstr. 1, 10115 Berlin, Germny", "Hauptstr. 1", "10115", "Berlin", "Germny"),  # close to a country: the caller suggests
    ],
)
def test_continental_layout(text, street, postal_code, city, country):
    assert split_address(text) == {"street": street, "city": city, "state": None, "postal_code": postal_code, "country": country}


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Austin, TX", {"street": None, "city": "Austin", "state": "TX", "postal_code": None, "country": None}),
        (
            "1 Congress Ave, Austin, TX, USA",
            {"street": "1 Congress Ave", "city": "Austin", "state": "TX", "postal_code": None, "country": "USA"},
        ),
        ("Toronto, Ontario, Canada", {"street": None, "city": "Toronto", "state": "Ontario", "postal_code": None, "country": "Canada"}),
        ("Berlin, Germany", {"street": None, "city": "Berlin", "state": None, "postal_code": None, "country": "Germany"}),
        ("Germany", {"street": None, "city": None, "state": None, "postal_code": None, "country": "Germany"}),
    ],
)
def test_layout_without_a_postcode(text, expected):
    assert split_address(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        " , \n ,",
        "Springfield",
        "10115 Berlin",  # neither a street before nor a country after: could be a US street line
        "1600 Pennsylvania Ave",
        "1600 Pennsylvania Ave, Washington",
        "100 Main St, Suite 1200",
        "Hauptstr. 1, 10115 Berlin, Springfield",
    ],
)
def test_what_no_layout_fits_stays_none(text):
    assert split_address(text) == dict.fromkeys(("street", "city", "state", "postal_code", "country"))


@given(st.text())
def test_split_address_never_raises(text):
    assert set(split_address(text)) == {"street", "city", "state", "postal_code", "country"}


@given(
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 ,.-\n'#/", max_size=80),
    st.sampled_from(["", ", USA", "\nUnited States", ", Germany", ", UK"]),
)
def test_split_address_never_raises_on_address_like_text(text, country):
    split_address(text + country)


WORDS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=3, max_size=10).map(str.capitalize)


@given(
    st.integers(1, 9999),
    st.lists(WORDS, min_size=1, max_size=3),
    st.lists(WORDS, min_size=1, max_size=2),
    st.sampled_from([s for s in ANCHORED_SUBDIVISIONS if s.country_code == "US"]),
    st.from_regex(r"\d{5}(-\d{4})?", fullmatch=True),
    st.sampled_from([None, "USA", "United States"]),
    st.sampled_from([", ", "\n"]),
)
def test_generated_us_addresses_split_back(number, street, city, state, zip_code, country, separator):
    street_line = f"{number} {' '.join(street)} St"
    city_name = " ".join(city)
    code = state.code.split("-")[1]
    text = separator.join([street_line, city_name, f"{code} {zip_code}"] + ([country] if country else []))
    assert split_address(text) == {"street": street_line, "city": city_name, "state": code, "postal_code": zip_code, "country": country}
