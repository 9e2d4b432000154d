"""The example services' own settings: what the `shipping` service refuses."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from sagaway.settings.sources import ComponentSettings, split_list


class ShippingSettings(ComponentSettings):
    """The example `shipping` service."""

    shipping_blocked_countries: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["AQ"],
        description=(
            "Example `shipping` service: ISO 3166 alpha-2 codes of countries it does not ship to "
            "(rejected); comma-separated or a JSON list."
        ),
    )

    @field_validator("shipping_blocked_countries", mode="before")
    @classmethod
    def _split_codes(cls, value: Any) -> Any:
        return split_list(value)
