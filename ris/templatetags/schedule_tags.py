"""The calendar's appointment block, rendered in Python: a busy day draws hundreds of
them, and a template include per block was most of the time to draw the day view."""

from __future__ import annotations

from typing import Any

from django import template
from django.middleware.csrf import get_token
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from ris.schedule_grid import Cell

register = template.Library()


@register.simple_tag(takes_context=True)
def appointment_block(context: template.Context, cell: Cell) -> SafeString:
    """A <details> block: who, what, when and status; opened, the actions this user may
    take (links were worked out by the view, one reverse() per action)."""
    appointment = cell.appointment
    order = appointment.order
    links = cell.links
    classes = f"appt appt-{order.status}"
    classes += " appt-short" if cell.short else ""
    classes += " appt-conflict" if cell.in_closure else ""
    status = order.get_status_display()
    status += " · walk-in" if appointment.is_walk_in else ""
    status += " · room closed: move it" if cell.in_closure else ""
    actions: list[Any] = [
        format_html('<a class="sched-button" href="{}">Open the order</a>', links["order"])
    ]
    if links.get("check_in"):
        actions.append(
            format_html(
                '<form method="post" action="{}">'
                '<input type="hidden" name="csrfmiddlewaretoken" value="{}">'
                '<input type="hidden" name="next" value="{}">'
                '<button type="submit">Check in</button></form>',
                links["check_in"],
                _csrf_token(context),
                context.get("here", ""),
            )
        )
    for key, label in (("move", "Move"), ("cancel", "Cancel"), ("letter", "Letter")):
        if links.get(key):
            actions.append(
                format_html('<a class="sched-button" href="{}">{}</a>', links[key], label)
            )
    return format_html(
        '<details id="appt-{}" class="{}">\n<summary><span class="appt-time">{}</span> '
        '<strong class="appt-patient">{}</strong> <span class="appt-proc">{}</span> '
        '<span class="appt-acc">{}</span> <span class="appt-status">{}</span></summary>\n'
        '<div class="appt-actions">\n{}\n</div>\n</details>',
        appointment.pk,
        classes,
        cell.time,
        order.patient.display_name,
        order.procedure.name,
        order.accession_number,
        status,
        format_html_join("\n", "{}", ((action,) for action in actions)),
    )


def _csrf_token(context: template.Context) -> str:
    """The page's CSRF token, made once per page (as {% csrf_token %} would)."""
    token = context.render_context.get("appointment_block_csrf")
    if token is None:
        request = context.get("request")
        token = get_token(request) if request is not None else str(context.get("csrf_token", ""))
        context.render_context["appointment_block_csrf"] = token
    return token
