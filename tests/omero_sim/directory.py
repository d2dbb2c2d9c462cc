"""Users and groups of the OMERO test server, read from a small JSON file."""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_USERS_FILE = Path(__file__).with_name("users.json")


@dataclass(frozen=True)
class Group:
    id: int
    name: str
    permissions: str = "rw----"


@dataclass(frozen=True)
class User:
    id: int
    name: str
    password: str
    groups: tuple[str, ...]
    first: str = ""
    last: str = ""
    admin: bool = False
    leads: tuple[str, ...] = ()
    email: str = ""

    @property
    def default_group(self) -> str:
        """The first listed group other than OMERO's `user` group (OMERO's default group)."""
        for name in self.groups:
            if name != "user":
                return name
        return self.groups[0]


@dataclass(frozen=True)
class Image:
    """An image: who owns it, in which group and dataset, its size and the hue of its pixels."""

    id: int
    name: str
    dataset: str
    owner: str
    group: str
    size: tuple[int, int] = (512, 512)
    hue: float = 0.0


@dataclass(frozen=True)
class Directory:
    """Who may log in, with which password, in which groups; the images they can see."""

    users: dict[str, User] = field(default_factory=dict)
    groups: dict[str, Group] = field(default_factory=dict)
    images: dict[int, Image] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path = DEFAULT_USERS_FILE) -> Directory:
        data = json.loads(path.read_text(encoding="utf-8"))
        groups = {
            g["name"]: Group(g["id"], g["name"], g.get("permissions", "rw----"))
            for g in data["groups"]
        }
        users: dict[str, User] = {}
        for u in data["users"]:
            unknown = [g for g in (*u["groups"], *u.get("leads", ())) if g not in groups]
            if unknown:
                raise ValueError(f"user {u['name']!r}: unknown groups {unknown}")
            users[u["name"]] = User(
                id=u["id"],
                name=u["name"],
                password=u["password"],
                groups=tuple(u["groups"]),
                first=u.get("first", ""),
                last=u.get("last", ""),
                admin=bool(u.get("admin")),
                leads=tuple(u.get("leads", ())),
                email=u.get("email", ""),
            )
        images = {
            i["id"]: Image(
                id=i["id"],
                name=i["name"],
                dataset=i["dataset"],
                owner=i["owner"],
                group=i["group"],
                size=(int(i["size"][0]), int(i["size"][1])),
                hue=float(i.get("hue", 0.0)),
            )
            for i in data.get("images", ())
        }
        for image in images.values():
            if image.owner not in users or image.group not in groups:
                raise ValueError(f"image {image.id}: unknown owner or group")
        return cls(users=users, groups=groups, images=images)

    def images_for(self, user: User) -> list[Image]:
        """The images `user` may read: those of the groups they are a member of (admins: all)."""
        return [i for i in self.images.values() if user.admin or i.group in user.groups]

    def authenticate(self, name: str, password: str) -> User | None:
        """The user when the password matches, else None."""
        user = self.users.get(name)
        if user is None or not hmac.compare_digest(user.password, password):
            return None
        return user

    def user_by_id(self, user_id: int) -> User | None:
        return next((u for u in self.users.values() if u.id == user_id), None)

    def group_by_id(self, group_id: int) -> Group | None:
        return next((g for g in self.groups.values() if g.id == group_id), None)
