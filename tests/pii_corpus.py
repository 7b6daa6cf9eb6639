"""A labelled corpus of planted personal data and secrets among look-alike decoys, for the redaction tests.

Every planted value is built here with its own check digits, computed independently of studio.redaction (Luhn,
IBAN mod-97, the Chinese resident ID's MOD 11-2), and its exact span is recorded with its kind; decoys are strings
of the same shapes that must stay: order numbers, version strings, dates, times, card-shaped numbers failing Luhn,
ID-shaped numbers with a wrong check digit, SSN shapes in the excluded ranges, prose about passwords.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass


@dataclass
class Planted:
    kind: str
    value: str  # the exact text to replace


def luhn_complete(body: str) -> str:
    """body plus the digit that makes the Luhn sum end in 0."""
    total = 0
    for position, char in enumerate(reversed(body)):
        digit = int(char)
        if position % 2 == 0:  # doubled: the check digit will be position 0
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return body + str((10 - total % 10) % 10)


def iban_with_check(country: str, bban: str) -> str:
    numeric = "".join(str(int(char, 36)) for char in bban + country + "00")
    return f"{country}{98 - int(numeric) % 97:02d}{bban}"


def cn_id_with_check(body: str) -> str:
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    return body + "10X98765432"[sum(int(d) * w for d, w in zip(body, weights)) % 11]


def grouped(number: str, size: int = 4, separator: str = " ") -> str:
    return separator.join(number[i : i + size] for i in range(0, len(number), size))


class Planter:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def digits(self, count: int) -> str:
        return "".join(self.rng.choice(string.digits) for _ in range(count))

    def word(self, size: int = 6) -> str:
        return "".join(self.rng.choice(string.ascii_lowercase) for _ in range(size))

    def email(self) -> str:
        user = self.rng.choice([self.word(5), f"{self.word(4)}.{self.word(6)}", f"{self.word(3)}+{self.word(4)}"])
        return f"{user}@{self.word(7)}.{self.rng.choice(['com', 'org', 'co.uk', 'de', 'cn'])}"

    def phone(self) -> str:
        return self.rng.choice(
            [
                f"+1 {self.digits(3)}-{self.digits(3)}-{self.digits(4)}",
                f"({self.rng.randint(200, 999)}) {self.digits(3)}-{self.digits(4)}",
                f"{self.rng.randint(200, 999)}-{self.digits(3)}-{self.digits(4)}",
                f"+44 20 {self.digits(4)} {self.digits(4)}",
                f"020 {self.digits(4)} {self.digits(4)}",
                f"+86 1{self.rng.choice('3456789')}{self.digits(1)} {self.digits(4)} {self.digits(4)}",
                f"1{self.rng.choice('3456789')}{self.digits(9)}",
                f"+49 30 {self.digits(8)}",
                f"+33 1 {self.digits(2)} {self.digits(2)} {self.digits(2)} {self.digits(2)}",
            ]
        )

    def ip(self) -> str:
        if self.rng.random() < 0.6:
            return ".".join(str(self.rng.randint(1, 254)) for _ in range(4))
        groups = [f"{self.rng.randint(1, 0xFFFF):x}" for _ in range(8)]
        return self.rng.choice([":".join(groups), f"{groups[0]}:db8::{groups[1]}", f"fe80::{groups[2]}:{groups[3]}"])

    def card(self) -> str:
        prefix, length = self.rng.choice([("4", 16), ("51", 16), ("55", 16), ("37", 15), ("6011", 16), ("2221", 16)])
        number = luhn_complete(prefix + self.digits(length - len(prefix) - 1))
        return self.rng.choice([number, grouped(number), grouped(number, separator="-")])

    def iban(self) -> str:
        country, bban = self.rng.choice(
            [
                ("DE", self.digits(18)),
                ("GB", "WEST" + self.digits(14)),
                ("FR", self.digits(23)),
                ("NL", "ABNA" + self.digits(10)),
            ]
        )
        iban = iban_with_check(country, bban)
        return self.rng.choice([iban, grouped(iban)])

    def cn_id(self) -> str:
        birth = f"{self.rng.randint(1950, 2005)}{self.rng.randint(1, 12):02d}{self.rng.randint(1, 28):02d}"
        return cn_id_with_check(f"{self.rng.choice(['110105', '310104', '440305', '510107'])}{birth}{self.digits(3)}")

    def ssn(self) -> str:
        area = self.rng.choice([n for n in range(1, 900) if n != 666])
        return f"{area:03d}-{self.rng.randint(1, 99):02d}-{self.rng.randint(1, 9999):04d}"

    def secret(self) -> tuple[str, str]:
        """(the text written, the part that is the secret)."""
        alnum = string.ascii_letters + string.digits
        token = self.rng.choice(
            [
                "AKIA" + "".join(self.rng.choice(string.ascii_uppercase + "234567") for _ in range(16)),
                "ghp_" + "".join(self.rng.choice(alnum) for _ in range(36)),
                "github_pat_" + "".join(self.rng.choice(alnum + "_") for _ in range(82)),
                "xoxb-" + self.digits(11) + "-" + "".join(self.rng.choice(alnum) for _ in range(24)),
                "sk-proj-" + "".join(self.rng.choice(alnum) for _ in range(40)),
                "AIza" + "".join(self.rng.choice(alnum + "_-") for _ in range(35)),
                "",
                "",
                "",
            ]
        )
        if token:
            return token, token
        kind = self.rng.choice(["assign", "url", "pem"])
        value = "".join(self.rng.choice(alnum) for _ in range(12))
        if kind == "assign":
            name = self.rng.choice(["password", "api_key", "PASSWORD", "client_secret"])
            return f"{name}={value}", value
        if kind == "url":
            return f"postgres://admin:{value}@db.{self.word(5)}.com/prod", f"admin:{value}"
        body = "\n".join("".join(self.rng.choice(alnum + "+/") for _ in range(64)) for _ in range(3))
        block = f"-----BEGIN RSA PRIVATE KEY-----\n{body}\n-----END RSA PRIVATE KEY-----"
        return block, block

    def decoy(self) -> str:
        """A string of a planted shape that is none of them."""
        card_body = self.rng.choice(["4", "51"]) + self.digits(14)
        bad_card = luhn_complete(card_body)[:-1] + str((int(luhn_complete(card_body)[-1]) + 1) % 10)
        good_id = cn_id_with_check(f"110105{self.rng.randint(1950, 2005)}0612{self.digits(3)}")
        wrong_check = "10X98765432".replace(good_id[-1], "")[self.rng.randint(0, 9)]
        return self.rng.choice(
            [
                f"order #A-{self.digits(5)}",
                f"order ORD-2024-{self.digits(6)}",
                f"version {self.rng.randint(0, 9)}.{self.rng.randint(0, 20)}.{self.rng.randint(0, 99)}",
                f"v{self.rng.randint(1, 9)}.{self.rng.randint(0, 9)}.{self.rng.randint(0, 9)}.{self.rng.randint(0, 9)}",
                f"on {self.rng.randint(1990, 2030)}-{self.rng.randint(1, 12):02d}-{self.rng.randint(1, 28):02d}",
                f"at {self.rng.randint(0, 23):02d}:{self.rng.randint(0, 59):02d}:{self.rng.randint(0, 59):02d}",
                f"card {grouped(bad_card)}",
                f"card {bad_card}",
                f"id {good_id[:-1]}{wrong_check}",
                f"ssn-like {self.rng.choice(['000', '666', '912'])}-{self.digits(2)}-{self.digits(4)}",
                f"invoice {self.digits(6)}",
                f"the password is stored hashed, see section {self.rng.randint(1, 9)}",
                f"total {self.rng.randint(1, 999)}.{self.digits(2)} EUR",
                "user@localhost is no address",
                f"DE{self.digits(2)} is a prefix",
            ]
        )


KINDS = ("email", "phone", "ip", "card", "iban", "cn_id", "ssn", "secret")


def labelled_documents(count: int, seed: int = 0) -> list[tuple[str, list[Planted]]]:
    """Documents of prose with planted values of every kind and decoys, each with what was planted in it."""
    planter = Planter(seed)
    documents = []
    for _ in range(count):
        parts, planted = [], []
        for _ in range(6):
            kind = planter.rng.choice(KINDS)
            if kind == "secret":
                written, value = planter.secret()
            else:
                written = value = getattr(planter, kind)()
            planted.append(Planted(kind, value))
            parts.append(f"{planter.rng.choice(['Contact', 'Note', 'See', 'Use'])} {written} then {planter.decoy()}.")
            parts.append(f"Also {planter.decoy()}, and {planter.word()} {planter.decoy()}.")
        documents.append(("\n".join(parts), planted))
    return documents
