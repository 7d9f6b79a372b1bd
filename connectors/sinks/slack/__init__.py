"""Slack sink: Block Kit messages edited in place, threads, digests, a durable outbox (see ``sink``)."""

from connectors.sinks.slack.api import SlackAPI, SlackError, SlackRefused, SlackRetry
from connectors.sinks.slack.blocks import Renderer
from connectors.sinks.slack.sink import SlackSink, SlackStore

__all__ = ["Renderer", "SlackAPI", "SlackError", "SlackRefused", "SlackRetry", "SlackSink", "SlackStore"]
