"""When periodic tasks run: ``schedule`` (an interval), ``crontab`` and ``solar``, with
Celery's semantics (``celery.schedules`` imports as ``fastq.schedules``).

Every schedule answers two questions about an entry whose last run was ``last_run_at``:
``remaining_estimate(last_run_at)`` (a timedelta, negative when late) and
``is_due(last_run_at)`` -> ``schedstate(is_due, next)`` (``next``: seconds until the beat
should ask again). fastq adds ``next_run_at(last_run_at)``: the instant the next run is
scheduled for, which names the run (entry + instant) when several beats share a store.

Wall-clock arithmetic happens in the schedule's zone (the App's ``timezone``, or UTC
with ``enable_utc`` and no zone), elapsed time in UTC, so a crontab follows the local
clock across DST and an interval does not: on the spring-forward day a 02:30 crontab
runs once, at 03:30, the first instant after the gap (as Celery does).
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections import namedtuple
from collections.abc import Callable, Iterable
from datetime import date, datetime, timedelta, timezone, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from ._extras import require

__all__ = ["schedule", "crontab", "solar", "schedstate", "maybe_schedule", "ParseException",
           "crontab_parser", "schedule_from_json", "schedule_to_json"]

schedstate = namedtuple("schedstate", ("is_due", "next"))

UTC = timezone.utc

#: Days of the longest month of each month number (February of a leap year).
DAYS_IN_MONTH = {1: 31, 2: 29, 3: 31, 4: 30, 5: 31, 6: 30, 7: 31, 8: 31, 9: 30, 10: 31,
                 11: 30, 12: 31}

_WEEKDAYS = {"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}
_MONTHS = {name: number for number, name in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1)}

#: Years a crontab search looks ahead before calling the expression impossible
#: (Feb 29 on a given weekday recurs within 28 years).
SEARCH_YEARS = 60


class ParseException(ValueError):
    """A crontab field that cannot be parsed."""


def _zone(name: str | tzinfo | None) -> tzinfo:
    if name is None:
        return UTC
    if isinstance(name, tzinfo):
        return name
    return UTC if name.upper() == "UTC" else ZoneInfo(name)


def app_zone(app: Any) -> tzinfo:
    """The zone of ``app`` (or the current App): ``timezone``, else UTC with ``enable_utc``,
    else the machine's local zone."""
    if app is None:
        from ._state import current_app

        app = current_app()
    conf = app.conf
    if conf.timezone:
        return _zone(conf.timezone)
    if conf.enable_utc:
        return UTC
    return datetime.now().astimezone().tzinfo or UTC


class BaseSchedule:
    """What every schedule shares: the zone it computes in, and "now"."""

    def __init__(self, nowfun: Callable[[], datetime] | None = None, app: Any = None,
                 tz: str | tzinfo | None = None) -> None:
        self.nowfun = nowfun
        self.app = app
        self._tz = _zone(tz) if tz is not None else None

    @property
    def tz(self) -> tzinfo:
        if self._tz is None:
            self._tz = app_zone(self.app)
        return self._tz

    def now(self) -> datetime:
        return self.nowfun() if self.nowfun is not None else datetime.now(self.tz)

    def maybe_make_aware(self, dt: datetime) -> datetime:
        """A naive ``dt`` is UTC (Celery's rule), shown in the schedule's zone."""
        if dt.tzinfo is None:
            return dt.replace(tzinfo=UTC).astimezone(self.tz)
        return dt

    def next_run_at(self, last_run_at: datetime) -> datetime:
        """The instant (aware) of the first run after ``last_run_at``."""
        raise NotImplementedError

    def remaining_estimate(self, last_run_at: datetime) -> timedelta:
        """Time from now until the next run after ``last_run_at`` (negative when late)."""
        return (self.next_run_at(last_run_at).astimezone(UTC)
                - self.maybe_make_aware(self.now()).astimezone(UTC))

    def is_due(self, last_run_at: datetime) -> schedstate:
        """``(True, seconds to the run after this one)`` or ``(False, seconds to wait)``."""
        remaining = max(self.remaining_estimate(last_run_at).total_seconds(), 0)
        if remaining == 0:
            following = max(self.remaining_estimate(self.now()).total_seconds(), 0)
            return schedstate(True, following)
        return schedstate(False, remaining)


class schedule(BaseSchedule):  # noqa: N801 - Celery's name
    """Every ``run_every`` (seconds or a timedelta) after the last run.

    With ``relative=True`` the next run is rounded down to the interval's resolution
    (whole days, hours or minutes in the schedule's zone), as Celery does.
    """

    def __init__(self, run_every: float | timedelta, relative: bool = False,
                 nowfun: Callable[[], datetime] | None = None, app: Any = None,
                 tz: str | tzinfo | None = None) -> None:
        super().__init__(nowfun, app, tz)
        self.run_every = (run_every if isinstance(run_every, timedelta)
                          else timedelta(seconds=run_every))
        self.relative = relative

    @property
    def seconds(self) -> float:
        return max(self.run_every.total_seconds(), 0.0)

    def next_run_at(self, last_run_at: datetime) -> datetime:
        # rounding (relative) happens in the zone last_run_at carries, as Celery's does
        start = self.maybe_make_aware(last_run_at)
        end = (start.astimezone(UTC) + self.run_every).astimezone(start.tzinfo)
        if not self.relative:
            return end
        return _relative_end(start, end, self.run_every)

    def is_due(self, last_run_at: datetime) -> schedstate:
        remaining = max(self.remaining_estimate(last_run_at).total_seconds(), 0)
        if remaining > 0:
            return schedstate(False, remaining)
        following = self.seconds
        if self.relative:
            # the next boundary counted from now, in the zone of the last run
            last = self.maybe_make_aware(last_run_at)
            now = self.maybe_make_aware(self.now()).astimezone(last.tzinfo)
            following = self.remaining_estimate(now).total_seconds()
            if following <= 0:
                following = self.seconds
        return schedstate(True, following)

    def __repr__(self) -> str:
        return f"<freq: {self.seconds:g}s>"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, schedule):
            return self.run_every == other.run_every and self.relative == other.relative
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.run_every)


def _round_down(dt: datetime, delta: timedelta) -> datetime:
    """``dt`` cut to the resolution of ``delta``: days, hours, minutes, else seconds."""
    seconds = max(delta.total_seconds(), 0)
    if seconds >= 86400:
        return datetime(dt.year, dt.month, dt.day, tzinfo=dt.tzinfo)
    if seconds >= 3600:
        return datetime(dt.year, dt.month, dt.day, dt.hour, tzinfo=dt.tzinfo)
    if seconds >= 60:
        return datetime(dt.year, dt.month, dt.day, dt.hour, dt.minute, tzinfo=dt.tzinfo)
    return dt.replace(microsecond=0)


def _occurrences(wall: datetime) -> list[datetime]:
    """The UTC instants a wall-clock time names: two in a repeated hour, one otherwise; a
    time in a DST gap moves forwards by the gap."""
    found = []
    for fold in (0, 1):
        candidate = wall.replace(fold=fold)
        back = candidate.astimezone(UTC).astimezone(candidate.tzinfo)
        if back.replace(tzinfo=None, fold=0) != candidate.replace(tzinfo=None, fold=0):
            gap = abs((candidate.replace(fold=1).utcoffset() or timedelta())
                      - (candidate.replace(fold=0).utcoffset() or timedelta()))
            candidate = (candidate.replace(tzinfo=None) + gap).replace(tzinfo=wall.tzinfo)
        found.append(candidate.astimezone(UTC))
    return found


def _relative_end(start: datetime, end: datetime, delta: timedelta) -> datetime:
    """The run of a ``relative=True`` schedule: the last boundary of ``delta``'s resolution
    at or before ``end`` and after ``start`` (calendar days for a day or more)."""
    start_utc = start.astimezone(UTC)
    if delta >= timedelta(days=1):
        # whole days count on the calendar: the first midnight after start
        future = [c for c in _occurrences(_round_down(start + delta, delta)) if c > start_utc]
        return min(future) if future else (start + delta).astimezone(UTC)
    end_utc = start_utc + delta
    candidates = _occurrences(_round_down(end, delta))
    before_end = [c for c in candidates if c <= end_utc]
    rounded = max(before_end) if before_end else min(candidates)
    if delta >= timedelta(minutes=1) and rounded <= start_utc:
        # a DST rollback or a zone off the hour put the boundary before start: take the
        # next clock boundary, or the calendar one, that falls after start
        unit = timedelta(hours=1) if delta >= timedelta(hours=1) else timedelta(minutes=1)
        candidates += _occurrences(_round_down(end + unit, delta))
        candidates += _occurrences(_round_down(start + delta, delta))
        future = [c for c in candidates if c > start_utc]
        before_end = [c for c in future if c <= end_utc]
        rounded = max(before_end) if before_end else min(future, default=end_utc)
    return rounded


class crontab_parser:  # noqa: N801 - Celery's name
    """Expands one crontab field (``*/15``, ``1-5``, ``mon-fri``, ``jan,jul``, ``9-17/2``)
    into the set of numbers it names, between ``min_`` and ``min_ + max_ - 1``."""

    _PART = re.compile(r"^(?:(?P<star>\*)|(?P<lo>\w+?)(?:-(?P<hi>\w+))?)(?:/(?P<step>\w*))?$")

    def __init__(self, max_: int = 60, min_: int = 0) -> None:
        self.max_ = max_
        self.min_ = min_

    def parse(self, spec: str) -> set[int]:
        found: set[int] = set()
        for part in spec.split(","):
            if not part:
                raise ParseException(f"empty part in crontab field {spec!r}")
            found.update(self._part(part))
        return found

    def _part(self, part: str) -> list[int]:
        match = self._PART.match(part)
        if match is None:
            raise ParseException(f"invalid crontab field {part!r}")
        step_text = match["step"]
        if step_text is not None and not step_text:
            raise ParseException(f"empty step in crontab field {part!r}")
        top = self.min_ + self.max_ - 1
        if match["star"]:
            values = list(range(self.min_, top + 1))
        else:
            low = self._number(match["lo"])
            if match["hi"] is None:
                values = [low]
            else:
                high = self._number(match["hi"])
                values = (list(range(low, high + 1)) if high >= low else
                          list(range(low, top + 1)) + list(range(self.min_, high + 1)))
        if step_text:
            step = int(step_text)
            if step <= 0:
                raise ParseException(f"step must be positive in {part!r}")
            values = values[::step]
        return values

    def _number(self, text: str) -> int:
        if text.isdigit():
            number = int(text)
        else:
            key = text[:3].lower()
            if key in _MONTHS:
                number = _MONTHS[key]
            elif key in _WEEKDAYS:
                number = _WEEKDAYS[key]
            else:
                raise ParseException(f"invalid crontab value {text!r}")
        if not self.min_ <= number <= self.min_ + self.max_ - 1:
            raise ParseException(
                f"crontab value {number} out of range {self.min_}-{self.min_ + self.max_ - 1}")
        return number


Cronspec = int | str | Iterable[int]


def _expand(spec: Cronspec | None, max_: int, min_: int = 0) -> frozenset[int]:
    if spec is None:
        spec = "*"
    if isinstance(spec, bool):
        raise TypeError(f"a crontab field cannot be {spec!r}")
    if isinstance(spec, int):
        values = {spec}
    elif isinstance(spec, str):
        values = crontab_parser(max_, min_).parse(spec)
    elif isinstance(spec, Iterable):
        values = set(spec)
    else:
        raise TypeError(f"a crontab field is an int, a str or an iterable of ints, "
                        f"not {type(spec).__name__}")
    for value in values:
        if not min_ <= value < min_ + max_:
            raise ValueError(f"crontab value {value} out of range {min_}-{min_ + max_ - 1}")
    return frozenset(values)


class crontab(BaseSchedule):  # noqa: N801 - Celery's name
    """Runs at the minutes matching all five fields, in the schedule's zone.

    ``day_of_week`` counts from Sunday = 0; a run needs the day of the month, the month
    and the day of the week to match (Celery's rule: AND, where cron says OR).
    """

    def __init__(self, minute: Cronspec = "*", hour: Cronspec = "*",
                 day_of_week: Cronspec = "*", day_of_month: Cronspec = "*",
                 month_of_year: Cronspec = "*", nowfun: Callable[[], datetime] | None = None,
                 app: Any = None, tz: str | tzinfo | None = None) -> None:
        super().__init__(nowfun, app, tz)
        self._orig = tuple("*" if s is None else s for s in
                           (minute, hour, day_of_week, day_of_month, month_of_year))
        self.minute = _expand(minute, 60)
        self.hour = _expand(hour, 24)
        self.day_of_week = _expand(day_of_week, 7)
        self.day_of_month = _expand(day_of_month, 31, 1)
        self.month_of_year = _expand(month_of_year, 12, 1)
        if not any(d <= DAYS_IN_MONTH[m] for m in self.month_of_year for d in self.day_of_month):
            raise ValueError(f"crontab: day_of_month {day_of_month!r} never occurs in "
                             f"month_of_year {month_of_year!r}")
        self._minutes = sorted(self.minute)
        self._hours = sorted(self.hour)
        self._days = sorted(self.day_of_month)
        self._months = sorted(self.month_of_year)

    @classmethod
    def from_string(cls, expression: str, **kwargs: Any) -> crontab:
        """``"m h dom mon dow"``, as in a crontab file."""
        fields = expression.split()
        if len(fields) != 5:
            raise ParseException(f"a crontab has 5 fields (m h dom mon dow), got {expression!r}")
        minute, hour, dom, month, dow = fields
        return cls(minute, hour, dow, dom, month, **kwargs)

    def _date_matches(self, day: date) -> bool:
        return (day.month in self.month_of_year and day.day in self.day_of_month
                and (day.isoweekday() % 7) in self.day_of_week)

    def _next_date(self, after: date) -> date:
        """The first matching date strictly after ``after``."""
        year, month = after.year, after.month
        for _ in range(SEARCH_YEARS * 12):
            if month in self.month_of_year:
                start = after.day if (year, month) == (after.year, after.month) else 0
                for day in self._days[bisect_right(self._days, start):]:
                    try:
                        candidate = date(year, month, day)
                    except ValueError:
                        break  # no such day in this month; nor any later one
                    if (candidate.isoweekday() % 7) in self.day_of_week:
                        return candidate
            month += 1
            if month == 13:
                month, year = 1, year + 1
        raise RuntimeError(f"{self!r} never runs (searched {SEARCH_YEARS} years)")

    def next_run_at(self, last_run_at: datetime) -> datetime:
        # the wall clock of the last run in the schedule's zone; the fields of the next
        # minute that matches replace its own (keeping the zone and fold, so a time in a
        # DST gap resolves forwards and a repeated hour keeps its side)
        last = self.maybe_make_aware(last_run_at).astimezone(self.tz)
        if self._date_matches(last.date()):
            if last.hour in self.hour:
                later = self._minutes[bisect_right(self._minutes, last.minute):]
                if later:
                    return last.replace(minute=later[0], second=0, microsecond=0)
            later_hours = self._hours[bisect_right(self._hours, last.hour):]
            if later_hours:
                return last.replace(hour=later_hours[0], minute=self._minutes[0],
                                    second=0, microsecond=0)
        day = self._next_date(last.date())
        return last.replace(year=day.year, month=day.month, day=day.day, hour=self._hours[0],
                            minute=self._minutes[0], second=0, microsecond=0)

    def is_due(self, last_run_at: datetime) -> schedstate:
        remaining = self.remaining_estimate(last_run_at).total_seconds()
        deadline = _setting(self.app, "beat_cron_starting_deadline")
        due = remaining <= 0
        if due and deadline is not None:
            # a missed run older than the deadline is not caught up
            now = self.maybe_make_aware(self.now()).astimezone(UTC)
            since = (now - timedelta(seconds=deadline, microseconds=1)).astimezone(self.tz)
            if self.remaining_estimate(since).total_seconds() > 0:
                due = False
                return schedstate(False, max(
                    self.remaining_estimate(self.now()).total_seconds(), 0))
        if due:
            return schedstate(True, max(self.remaining_estimate(self.now()).total_seconds(), 0))
        return schedstate(False, remaining)

    def __repr__(self) -> str:
        minute, hour, dow, dom, month = self._orig
        return f"<crontab: {minute} {hour} {dom} {month} {dow} (m/h/dM/MY/d)>"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, crontab):
            return (self.minute, self.hour, self.day_of_week, self.day_of_month,
                    self.month_of_year) == (other.minute, other.hour, other.day_of_week,
                                            other.day_of_month, other.month_of_year)
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self.minute, self.hour, self.day_of_week))


def _setting(app: Any, name: str) -> Any:
    if app is None:
        from ._state import current_app

        app = current_app()
    return app.conf.get(name)


#: event -> (ephem method, horizon in degrees, measured at the sun's centre)
SOLAR_EVENTS: dict[str, tuple[str, str, bool]] = {
    "dawn_astronomical": ("next_rising", "-18", True),
    "dawn_nautical": ("next_rising", "-12", True),
    "dawn_civil": ("next_rising", "-6", True),
    # the upper limb at the horizon, refraction included: 34 arc minutes below
    "sunrise": ("next_rising", "-0:34", False),
    "solar_noon": ("next_transit", "0", False),
    "sunset": ("next_setting", "-0:34", False),
    "dusk_civil": ("next_setting", "-6", True),
    "dusk_nautical": ("next_setting", "-12", True),
    "dusk_astronomical": ("next_setting", "-18", True),
}

#: Days a solar schedule looks ahead for an event that does not happen every day
#: (sunrise in the polar night).
SOLAR_SEARCH_DAYS = 366


class solar(BaseSchedule):  # noqa: N801 - Celery's name
    """Runs at a solar event (``sunrise``, ``dusk_civil``, ...; see ``SOLAR_EVENTS``)
    seen from latitude ``lat``, longitude ``lon``. Needs ``pip install 'fastq[solar]'``
    (the astronomy is PyEphem's, as Celery's is)."""

    def __init__(self, event: str, lat: float, lon: float,
                 nowfun: Callable[[], datetime] | None = None, app: Any = None,
                 tz: str | tzinfo | None = None) -> None:
        super().__init__(nowfun, app, tz)
        if event not in SOLAR_EVENTS:
            raise ValueError(f"unknown solar event {event!r}; one of "
                             f"{', '.join(sorted(SOLAR_EVENTS))}")
        if not -90 <= lat <= 90:
            raise ValueError(f"latitude {lat} is not between -90 and 90")
        if not -180 <= lon <= 180:
            raise ValueError(f"longitude {lon} is not between -180 and 180")
        self._ephem = require("ephem", "solar schedules")
        self.event, self.lat, self.lon = event, lat, lon
        self.method, horizon, self.use_center = SOLAR_EVENTS[event]
        observer = self._ephem.Observer()
        observer.lat, observer.lon = str(lat), str(lon)
        observer.elev = 0
        observer.pressure = 0  # the horizon above already counts refraction
        observer.horizon = horizon
        self._observer = observer

    def next_run_at(self, last_run_at: datetime) -> datetime:
        ephem = self._ephem
        start = ephem.Date(self.maybe_make_aware(last_run_at).astimezone(UTC)
                           .replace(tzinfo=None))
        sun = ephem.Sun()
        options = {"use_center": True} if self.use_center else {}
        for _ in range(SOLAR_SEARCH_DAYS):
            try:
                found = getattr(self._observer, self.method)(sun, start=start, **options)
                break
            except ephem.CircumpolarError:  # not today at this latitude: try tomorrow
                start = self._observer.next_antitransit(sun, start=start)
        else:
            found = start  # ask again then
        return found.datetime().replace(tzinfo=UTC).astimezone(self.tz)

    def __repr__(self) -> str:
        return f"<solar: {self.event} at latitude {self.lat}, longitude: {self.lon}>"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, solar):
            return (self.event, self.lat, self.lon) == (other.event, other.lat, other.lon)
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self.event, self.lat, self.lon))


def maybe_schedule(value: Any, relative: bool = False, app: Any = None) -> Any:
    """A number or timedelta becomes a ``schedule``; a schedule is returned as it is."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = timedelta(seconds=value)
    if isinstance(value, timedelta):
        return schedule(value, relative, app=app)
    if isinstance(value, BaseSchedule) and app is not None and value.app is None:
        value.app = app
    return value


def schedule_to_json(value: Any) -> dict[str, Any]:
    """A schedule as the JSON document the database schedule source stores."""
    value = maybe_schedule(value)
    if isinstance(value, crontab):
        minute, hour, dow, dom, month = (v if isinstance(v, (int, str)) else sorted(v)
                                         for v in value._orig)
        return {"crontab": {"minute": minute, "hour": hour, "day_of_week": dow,
                            "day_of_month": dom, "month_of_year": month}}
    if isinstance(value, solar):
        return {"solar": {"event": value.event, "lat": value.lat, "lon": value.lon}}
    if isinstance(value, schedule):
        return {"every": value.seconds, "relative": value.relative}
    raise TypeError(f"cannot store schedule {value!r}")


def schedule_from_json(document: dict[str, Any], app: Any = None) -> BaseSchedule:
    """The schedule a ``schedule_to_json`` document describes."""
    if "crontab" in document:
        return crontab(**document["crontab"], app=app)
    if "solar" in document:
        return solar(**document["solar"], app=app)
    return schedule(document["every"], document.get("relative", False), app=app)
