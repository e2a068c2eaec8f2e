"""The analysts' pages: the queue, an alert with its disposition form, a case, the supervisor's
page. Every handler needs a session; every form post needs the session's CSRF token."""

from __future__ import annotations

import time
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import or_, select, update

from schemas import SUSPICIOUS_TYPOLOGIES, Alert, decode
from stream.desk import plots
from stream.desk.auth import audit
from stream.desk.database import utcnow
from stream.desk.deps import Db, NotFound, Poster, Supervisor, Who, render, state
from stream.desk.errors import DispositionRefused
from stream.desk.outbox import record_disposition
from stream.desk.queries import (
    AGES,
    SCORE_BANDS,
    SORTS,
    STATUSES,
    QueueFilter,
    model_versions,
    queue_page,
    supervisor_stats,
)
from stream.desk.tables import (
    AlertRow,
    AuditEntry,
    Case,
    CaseNote,
    Disposition,
    OutboxRow,
    User,
    Verdict,
)
from stream.desk.view import context_features, format_amount, highlight, read_record

router = APIRouter()


def _see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


@router.get("/", response_class=HTMLResponse)
def home(who: Who) -> RedirectResponse:
    return _see_other("/queue")


@router.get("/queue", response_class=HTMLResponse)
def queue(request: Request, who: Who, db: Db) -> HTMLResponse:
    chosen = QueueFilter.parse(dict(request.query_params))
    page_size = state(request).settings.desk.page_size
    rows, total = queue_page(db, chosen, who.user.id, page_size)
    return render(
        request,
        "queue.html",
        chosen=chosen,
        rows=rows,
        total=total,
        page_size=page_size,
        pages=max(1, -(-total // page_size)),
        statuses=list(STATUSES),
        bands=list(SCORE_BANDS),
        ages=list(AGES),
        sorts=SORTS,
        typologies=[t.value for t in SUSPICIOUS_TYPOLOGIES],
        models=_model_versions(request, db),
        format_amount=format_amount,
    )


def _model_versions(request: Request, db: Db) -> list[str]:
    desk = state(request)
    if time.monotonic() - desk.model_versions_at > 60:
        desk.model_versions = model_versions(db)
        desk.model_versions_at = time.monotonic()
    return desk.model_versions


def _alert_row(db: Db, alert_id: str) -> AlertRow:
    row = db.get(AlertRow, alert_id) if len(alert_id) <= 64 else None
    if row is None:
        raise NotFound()
    return row


@router.get("/alerts/{alert_id}", response_class=HTMLResponse)
def alert_page(request: Request, alert_id: str, who: Who, db: Db) -> HTMLResponse:
    row = _alert_row(db, alert_id)
    alert = decode(Alert, row.payload.encode())
    desk = state(request).settings.desk
    others = db.execute(
        select(
            AlertRow.alert_id,
            AlertRow.event_time,
            AlertRow.typology,
            AlertRow.score,
            AlertRow.status,
            AlertRow.amount_minor,
            AlertRow.currency,
            AlertRow.case_id,
        )
        .where(AlertRow.customer_id == row.customer_id, AlertRow.alert_id != row.alert_id)
        .order_by(AlertRow.event_time.desc())
        .limit(desk.recent_alerts)
    ).all()
    recent_events = [
        decode(Alert, payload.encode()).event
        for payload in db.scalars(
            select(AlertRow.payload)
            .where(AlertRow.customer_id == row.customer_id, AlertRow.event_time <= row.event_time)
            .order_by(AlertRow.event_time.desc())
            .limit(desk.recent_alerts)
        )
    ]
    record = read_record(state(request).records, alert.event.event_id)
    history = db.execute(
        select(Disposition, User.username)
        .join(User, User.id == Disposition.user_id)
        .where(Disposition.alert_id == alert_id)
        .order_by(Disposition.created_at)
    ).all()
    assignee = db.get(User, row.assignee_id) if row.assignee_id else None
    db.commit()
    return render(
        request,
        "alert.html",
        row=row,
        alert=alert,
        segments=highlight(alert.narrative, alert.reasons),
        others=others,
        recent_events=recent_events,
        record=record,
        features=context_features(record),
        history=history,
        assignee=assignee,
        typologies=[t.value for t in SUSPICIOUS_TYPOLOGIES],
        format_amount=format_amount,
        error=request.query_params.get("error"),
    )


@router.post("/alerts/{alert_id}/assign")
def assign(
    alert_id: str, who: Poster, db: Db, back: Annotated[str, Form()] = ""
) -> RedirectResponse:
    row = _alert_row(db, alert_id)
    db.execute(
        update(AlertRow).where(AlertRow.alert_id == row.alert_id).values(assignee_id=who.user.id)
    )
    audit(db, who.user, "alert.assign", f"alert:{alert_id}", f"to {who.user.username}")
    db.commit()
    # Only a local path may come back: an absolute URL here would be an open redirect.
    safe = back if back.startswith("/") and not back.startswith("//") else f"/alerts/{alert_id}"
    return _see_other(safe)


@router.post("/alerts/{alert_id}/disposition")
def disposition(
    alert_id: str,
    who: Poster,
    db: Db,
    verdict: Annotated[str, Form()] = "",
    typology: Annotated[str, Form()] = "",
    note: Annotated[str, Form()] = "",
) -> RedirectResponse:
    row = _alert_row(db, alert_id)
    try:
        record_disposition(db, who.user, row.alert_id, verdict, typology or None, note)
    except DispositionRefused as error:
        db.rollback()
        return _see_other(f"/alerts/{alert_id}?error={quote(str(error))}")
    db.commit()
    return _see_other(f"/cases/{row.case_id}" if verdict != Verdict.NEEDS_INFO else "/queue")


@router.get("/cases/{case_id}", response_class=HTMLResponse)
def case_page(request: Request, case_id: int, who: Who, db: Db) -> HTMLResponse:
    case = db.get(Case, case_id)
    if case is None:
        raise NotFound()
    alerts = db.execute(
        select(
            AlertRow.alert_id,
            AlertRow.event_time,
            AlertRow.score,
            AlertRow.status,
            AlertRow.amount_minor,
            AlertRow.currency,
            AlertRow.model_version,
        )
        .where(AlertRow.case_id == case_id)
        .order_by(AlertRow.event_time)
    ).all()
    notes = db.execute(
        select(CaseNote, User.username)
        .join(User, User.id == CaseNote.user_id)
        .where(CaseNote.case_id == case_id)
        .order_by(CaseNote.created_at)
    ).all()
    targets = [f"case:{case_id}", *(f"alert:{a.alert_id}" for a in alerts)]
    history = db.scalars(
        select(AuditEntry).where(AuditEntry.target.in_(targets)).order_by(AuditEntry.at).limit(500)
    ).all()
    return render(
        request,
        "case.html",
        case=case,
        alerts=alerts,
        notes=notes,
        history=history,
        format_amount=format_amount,
    )


@router.post("/cases/{case_id}/notes")
def add_note(
    case_id: int, who: Poster, db: Db, text: Annotated[str, Form()] = ""
) -> RedirectResponse:
    if db.get(Case, case_id) is None:
        raise NotFound()
    text = text.strip()[:4000]
    if text:
        db.add(CaseNote(case_id=case_id, user_id=who.user.id, text=text, created_at=utcnow()))
        audit(db, who.user, "case.note", f"case:{case_id}")
        db.commit()
    return _see_other(f"/cases/{case_id}")


@router.get("/supervisor", response_class=HTMLResponse)
def supervisor(request: Request, who: Supervisor, db: Db) -> HTMLResponse:
    stats = supervisor_stats(db)
    unsent = db.scalars(
        select(OutboxRow.label_id)
        .where(OutboxRow.sent_at.is_(None))
        .order_by(OutboxRow.id)
        .limit(20)
    ).all()
    return render(request, "supervisor.html", stats=stats, plots=plots.PLOTS, unsent=unsent)


@router.get("/supervisor/plots/{name}.png")
def plot(name: str, who: Supervisor, db: Db) -> Response:
    if name not in plots.PLOTS:
        raise NotFound()
    png = plots.draw(name, supervisor_stats(db))
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})


@router.get("/audit", response_class=HTMLResponse)
def audit_page(request: Request, who: Supervisor, db: Db) -> HTMLResponse:
    target = request.query_params.get("target", "")[:160]
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(200)
    if target:
        query = query.where(or_(AuditEntry.target == target, AuditEntry.username == target))
    return render(request, "audit.html", entries=db.scalars(query).all(), target=target)
