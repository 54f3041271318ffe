"""Former path of services.wire.codec, kept for POS clients that decode answers with AvroCodec
(docs/pos-integration.md); new code imports services.wire.codec."""

from services.wire.codec import *  # noqa: F403
