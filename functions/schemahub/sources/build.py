"""The Source for a spec's pagination kind."""

from __future__ import annotations

from schemahub.sources.base import Source
from schemahub.sources.forward import CursorForwardSource, IdForwardSource
from schemahub.sources.idwindow import IdWindowSource
from schemahub.sources.spec import ExchangeSpec

KINDS = {"id_window_desc": IdWindowSource, "id_forward": IdForwardSource, "cursor_forward": CursorForwardSource}


def build_source(spec: ExchangeSpec, http) -> Source:
    return KINDS[spec.source.trades.pagination.kind](spec, http)
