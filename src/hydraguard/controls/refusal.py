"""A request the controls refuse: the gateway answers it with this status in OpenAI's error format."""

from __future__ import annotations


class ControlRefusal(Exception):
    def __init__(self, status: int, code: str, message: str, param: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.param = status, code, message, param
