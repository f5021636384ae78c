"""The REST API's bodies: what its endpoints answer (products, matches, pages, the category
guess, health) and the edit a PATCH takes."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictFloat

from vitrine.catalog import CATEGORY_MAX, MAX_PRICE
from vitrine.copies import Copies
from vitrine.store.base import Match, StoredProduct
from vitrine.web.links import image_url


class ProductOut(BaseModel):
    product_id: str
    name: str
    category: str
    price: float | None
    description: str
    attributes: dict[str, str]
    image_url: str


SAME_PHOTO = ("How many other products share this result's photo (the same file, or its copies: "
              "a product listed once a size), as the last `vitrine index` counted them, in "
              "the whole catalogue: under a price or attribute filter some may be outside "
              "it; a list shows one product a photo, the best scored; 0 when none does.")


class ResultOut(BaseModel):
    product_id: str
    name: str
    category: str
    score: float
    price: float | None
    description: str
    image_url: str
    same_photo: int = Field(description=SAME_PHOTO)


ALWAYS_SENT = ConfigDict(json_schema_serialization_defaults_required=True)
"""An answer's fields with a default are still always sent: required in OpenAPI (a generated
client typed ``next_cursor`` as possibly absent, ``Unset``, besides null)."""


class ProductPage(BaseModel):
    model_config = ALWAYS_SENT

    products: list[ProductOut]
    limit: int
    offset: int
    has_more: bool
    next_cursor: str | None = Field(
        None, description="The next page's `cursor` (null on the last page): it starts "
                          "after this page's last product, whatever was added or removed "
                          "before it meanwhile.")
    total: int | None = Field(
        None, description="How many products the listing holds in all pages (its category, "
                          "price and attribute filter), when asked with `total=1`; null "
                          "otherwise, and for a name search (`q`).")


LEFT_OUT = ("Products left out of the results because their photo is a placeholder (one "
            "photo, with its copies, that at least VITRINE_PLACEHOLDER_MIN products share, as "
            "the last `vitrine index` counted them): of the whole store; 0 when none is.")


class SimilarOut(BaseModel):
    product: ProductOut
    results: list[ResultOut]
    placeholder: bool = Field(
        description="The product's own photo is a placeholder: the results are near that "
                    "photo, not like the product.")
    placeholders_left_out: int = Field(description=LEFT_OUT + " The product's own copies "
                                                   "are not counted.")


class RunnerUpOut(BaseModel):
    category: str
    probability: float


class CategoryGuessOut(BaseModel):
    category: str
    probability: float
    sure: bool = Field(description="False when the probability is below "
                                   "VITRINE_GUESS_MIN_PROBABILITY: show the runner-up too.")
    runner_up: RunnerUpOut | None = Field(description="The next most likely category.")


class SearchOut(BaseModel):
    model_config = ALWAYS_SENT

    results: list[ResultOut]
    predicted_category: CategoryGuessOut | None = Field(
        None, description="The photo's likely category and its probability, when the store "
                          "was indexed with a trained model whose embedding carries class "
                          "probabilities (the default); null otherwise.")
    placeholders_left_out: int = Field(0, description=LEFT_OUT)


class ProductEdit(BaseModel):
    """The fields ``PATCH /api/products/{id}`` changes; the ones left out stay as they are."""

    model_config = ConfigDict(extra="forbid",  # (minProperties: {} is a 422, "send at
                              # least one of…"; a schema without it promised {} a 200)
                              json_schema_extra={"examples": [{"price": "R$ 1.299,90"}],
                                                 "minProperties": 1})
    # no defaults in the schema: a client filling in the defaults would blank the fields
    name: str = Field(None, max_length=300)
    category: str = Field(None, max_length=CATEGORY_MAX)
    price: Annotated[StrictFloat, Field(ge=0, le=MAX_PRICE, allow_inf_nan=False)] | Annotated[
        str, Field(max_length=40)] | None = Field(
        None, description="A number, a text such as 'R$ 1.299,90', or null for no price.")
    description: str = Field(None, max_length=5000)


class ErrorOut(BaseModel):
    """Every error's body: one sentence (a 422 too, not a list of validation errors)."""
    detail: str


class SavedOut(BaseModel):
    """A write the server, stopping, cut off after its change was made (guards.Stopping):
    saved, but not answered with the product; GET it once the server is back."""
    detail: str
    saved: bool
    product_id: str


class Health(BaseModel):
    status: str
    products: int
    model: str


def product_out(p: StoredProduct, root: str = "") -> ProductOut:
    """``p`` as the API answers it; ``root``: the path prefix its photo's address starts with
    (``VITRINE_ROOT_PATH``)."""
    return ProductOut(product_id=p.product_id, name=p.name, category=p.category, price=p.price,
                      description=p.description, attributes=p.attributes,
                      image_url=root + image_url(p.product_id))


def result_out(m: Match, root: str = "", copies: Copies | None = None) -> ResultOut:
    p = m.product
    return ResultOut(product_id=p.product_id, name=p.name, category=p.category,
                     score=round(float(m.score), 6), price=p.price, description=p.description,
                     image_url=root + image_url(p.product_id),
                     same_photo=copies.same_photo(p) if copies is not None else 0)
