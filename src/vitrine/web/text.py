"""The web page's words in Portuguese (default) and English, and locale-aware formatting."""

from __future__ import annotations

from vitrine.display import cents
from vitrine.display import percent as display_percent

LANGS = ("pt", "en")
DEFAULT_LANG = "pt"

TEXT: dict[str, dict[str, str]] = {
    "pt": {
        "html_lang": "pt-BR",
        "thousands": ".",
        "tagline": "Produtos parecidos pela foto",
        "skip": "Pular para o conteúdo",
        "nav_catalogue": "Catálogo",
        "nav_search": "Buscar por foto",
        "switch_lang": "English",
        "switch_lang_name": "Read this page in English",
        "catalogue_title": "Catálogo",
        "category": "Categoria",
        "all_categories": "Todas as categorias",
        "search_name": "Nome do produto",
        "search_placeholder": "Ex.: Rockport",
        "filter": "Filtrar",
        "clear_filters": "Limpar",
        "page": "Página {n}",
        "page_of": "Página {n} de {pages}",
        "pagination": "Paginação",
        "previous": "Anterior",
        "next": "Próxima",
        "no_products": "Nenhum produto encontrado.",
        "no_products_filtered": "Nenhum produto atende a este filtro: mude-o ou limpe-o "
                                "para ver mais.",
        "no_category": "Não há categoria “{category}”.",
        "near_categories": "Categorias parecidas:",
        "past_last_page": "Não há produtos nesta página.",
        "last_page_is": "A última é a página {n}.",
        "first_page": "Ir para a página 1",
        "products_count": "{n} produtos",
        "products_count_one": "{n} produto",
        "similar_title": "Produtos similares",
        "similar_pct": "{pct}% similar",
        "same_photo": "+{n} com a mesma foto",
        "same_photo_title": "Esta foto (ou uma cópia dela) também é a de outros produtos do "
                            "catálogo: a lista mostra um produto por foto.",
        "same_photo_filtered": "+{n} com a mesma foto no catálogo",
        "same_photo_filtered_title": "Esta foto (ou uma cópia dela) também é a de outros "
                                     "produtos do catálogo, contados todos, também os fora "
                                     "do filtro: a lista mostra um produto por foto.",
        "no_similar": "Nenhum produto similar encontrado.",
        "shared_photo": "A foto deste produto é a mesma de {n} produtos (uma foto provisória): "
                        "os produtos abaixo se parecem com a foto, não com o produto.",
        "show": "Mostrar:",
        "only_category": "só {category}",
        "price_unknown": "Preço não informado",
        "price_label": "Preço",
        "description_label": "Descrição",
        "details": "Detalhes",
        "photo_of": "Foto de {name}",
        "back": "Voltar ao catálogo",
        "search_title": "Buscar por foto",
        "search_intro": "Envie a foto de um produto e veja os produtos mais parecidos do "
                        "catálogo.",
        "choose_photo": "Escolha uma foto",
        "search_in": "Buscar em",
        "drop_hint": "ou arraste e solte a foto aqui",
        "photo_formats": "JPEG, PNG, WebP, HEIC (iPhone) e outros formatos de foto, até "
                         "{mb} MB.",
        "search_button": "Buscar produtos parecidos",
        "searching": "Buscando…",
        "your_photo": "Sua foto",
        "no_preview": "Sua foto, {name} (este navegador não mostra este formato)",
        "results_title": "Resultados",
        "no_results": "Nenhum resultado.",
        "results_found": "{n} produtos parecidos encontrados.",
        "results_found_one": "{n} produto parecido encontrado.",
        "looks_like": "Parece ser da categoria {category} ({pct}% de probabilidade).",
        "not_sure": "Não temos certeza: pode ser da categoria {category} ({pct}% de "
                    "probabilidade) ou {other} ({other_pct}%).",
        "no_file": "Escolha uma foto antes de buscar.",
        "error_title": "Algo deu errado",
        "not_found_title": "Não encontrado",
        "error_word": "Erro",
        "error_generic": "Não foi possível concluir a busca. Tente outra foto.",
        "not_found": "Página ou produto não encontrado.",
        "bad_photo": "Este arquivo não é uma foto que possamos usar. Tente um JPEG, PNG ou "
                     "WebP.",
        "damaged_photo": "Esta foto parece danificada: não foi possível lê-la inteira. Tente "
                         "outra cópia dela.",
        "empty_photo": "Este arquivo está vazio (0 bytes): uma foto que ainda não foi baixada "
                       "da nuvem para o aparelho? Abra-a antes ou escolha outra.",
        "photo_pixels": "Esta foto tem pixels demais (limite de {mp} megapixels). Envie uma "
                        "cópia menor.",
        "photo_side": "Esta foto tem um lado longo demais (mais de {side} pixels). Envie uma "
                      "cópia menor.",
        "photo_small": "Esta foto é pequena demais para buscar (um lado com menos de {side} "
                       "pixels). Envie uma cópia maior.",
        "too_large": "A foto é grande demais (limite de {mb} MB).",
        "unreadable_photo": "Não foi possível ler esta foto no aparelho: ela mudou ou foi "
                            "movida depois de escolhida, ou não é um arquivo. Escolha-a de "
                            "novo.",
        "cut_off": "O envio da foto foi interrompido antes do fim. Envie-a de novo.",
        "bad_request": "O endereço tem um parâmetro inválido.",
        "bad_form": "O formulário tem um campo inválido.",
        "method_not_allowed": "Este endereço não aceita esse tipo de pedido.",
        "busy": "O catálogo está sendo atualizado. Tente de novo em instantes.",
        "unavailable": "O catálogo não está disponível agora. Tente de novo em instantes.",
        "searches_busy": "O servidor está com buscas por foto demais neste momento. Tente "
                         "de novo em instantes.",
        "server_error": "Algo deu errado no servidor. Tente de novo em instantes.",
        "offline": "Não foi possível falar com o servidor. Verifique a conexão e tente de "
                   "novo.",
        "slow": "O servidor não respondeu a tempo. Tente de novo em instantes.",
        "other_error": "Não foi possível atender ao pedido.",
        "footer": "Vitrine — recomendações por similaridade visual.",
        "attributes": "Características",
        "filter_legend": "Filtrar resultados",
        "min_price": "Preço mínimo (R$)",
        "max_price": "Preço máximo (R$)",
        "min_price_name": "preço mínimo",
        "max_price_name": "preço máximo",
        "any_value": "Qualquer",
        "attr_typed": "Característica (chave=valor)",
        "filters_clear": "Limpar filtros",
        "filtered_by": "Filtro:",
        "priced_between": "preço de {low} a {high}",
        "priced_from": "preço a partir de {low}",
        "priced_up_to": "preço até {high}",
        "no_match_filtered": "Nenhum produto parecido atende a este filtro: mude-o ou "
                             "limpe-o para ver mais.",
        "filter_not_price": "O {field} “{value}” não é um número: escreva só o número, "
                            "como 49,90.",
        "filter_price_range": "O {field} “{value}” não é um preço: escreva um valor de 0 a "
                              "{most}.",
        "filter_price_order": "O preço mínimo ({low}) é maior que o máximo ({high}): "
                              "troque-os ou apague um deles.",
        "filter_too_many": "Filtros de características demais ({n}): no máximo {most} por "
                           "busca.",
        "filter_bad_attribute": "O filtro de característica “{value}” não está escrito como "
                                "chave=valor.",
        "filter_not_shown": "Outros {n} enviados não cabem nos campos e ficam de fora.",
    },
    "en": {
        "html_lang": "en",
        "thousands": ",",
        "tagline": "Similar products by photo",
        "skip": "Skip to content",
        "nav_catalogue": "Catalogue",
        "nav_search": "Search by photo",
        "switch_lang": "Português",
        "switch_lang_name": "Ler esta página em português",
        "catalogue_title": "Catalogue",
        "category": "Category",
        "all_categories": "All categories",
        "search_name": "Product name",
        "search_placeholder": "e.g. Rockport",
        "filter": "Filter",
        "clear_filters": "Clear",
        "page": "Page {n}",
        "page_of": "Page {n} of {pages}",
        "pagination": "Pages",
        "previous": "Previous",
        "next": "Next",
        "no_products": "No products found.",
        "no_products_filtered": "No product matches this filter: change or clear it to "
                                "see more.",
        "no_category": "There is no category “{category}”.",
        "near_categories": "Similar categories:",
        "past_last_page": "There are no products on this page.",
        "last_page_is": "The last one is page {n}.",
        "first_page": "Go to page 1",
        "products_count": "{n} products",
        "products_count_one": "{n} product",
        "similar_title": "Similar products",
        "similar_pct": "{pct}% similar",
        "same_photo": "+{n} with the same photo",
        "same_photo_title": "This photo (or a copy of it) is also that of other products of "
                            "the catalogue: the list shows one product a photo.",
        "same_photo_filtered": "+{n} with the same photo in the catalogue",
        "same_photo_filtered_title": "This photo (or a copy of it) is also that of other "
                                     "products of the catalogue, all counted, also those "
                                     "outside the filter: the list shows one product a photo.",
        "no_similar": "No similar products found.",
        "shared_photo": "This product's photo is the one of {n} products (a placeholder "
                        "photo): the products below look like the photo, not like the "
                        "product.",
        "show": "Show:",
        "only_category": "only {category}",
        "price_unknown": "Price not given",
        "price_label": "Price",
        "description_label": "Description",
        "details": "Details",
        "photo_of": "Photo of {name}",
        "back": "Back to the catalogue",
        "search_title": "Search by photo",
        "search_intro": "Upload a photo of a product and see the most similar products of the "
                        "catalogue.",
        "choose_photo": "Choose a photo",
        "search_in": "Search in",
        "drop_hint": "or drag and drop the photo here",
        "photo_formats": "JPEG, PNG, WebP, HEIC (iPhone) and other photo formats, up to "
                         "{mb} MB.",
        "search_button": "Find similar products",
        "searching": "Searching…",
        "your_photo": "Your photo",
        "no_preview": "Your photo, {name} (this browser does not show this format)",
        "results_title": "Results",
        "no_results": "No results.",
        "results_found": "{n} similar products found.",
        "results_found_one": "{n} similar product found.",
        "looks_like": "Looks like the category {category} ({pct}% probability).",
        "not_sure": "Not sure: the category {category} ({pct}% probability) or {other} "
                    "({other_pct}%).",
        "no_file": "Choose a photo before searching.",
        "error_title": "Something went wrong",
        "not_found_title": "Not found",
        "error_word": "Error",
        "error_generic": "The search could not be completed. Try another photo.",
        "not_found": "Page or product not found.",
        "bad_photo": "This file is not a photo we can use. Try a JPEG, PNG or WebP.",
        "damaged_photo": "This photo seems damaged: it could not be read whole. Try another "
                         "copy of it.",
        "empty_photo": "This file is empty (0 bytes): a photo not yet downloaded from the "
                       "cloud to this device? Open it first, or choose another.",
        "photo_pixels": "This photo has too many pixels (limit {mp} megapixels). Send a "
                        "smaller copy.",
        "photo_side": "This photo has a side too long (over {side} pixels). Send a smaller "
                      "copy.",
        "photo_small": "This photo is too small to search by (a side under {side} pixels). "
                       "Send a larger copy.",
        "too_large": "The photo is too large (limit {mb} MB).",
        "unreadable_photo": "This photo could not be read on this device: it changed or moved "
                            "after it was chosen, or it is not a file. Choose it again.",
        "cut_off": "The upload of the photo was cut off before its end. Send it again.",
        "bad_request": "The address has a parameter that is not valid.",
        "bad_form": "The form has a field that is not valid.",
        "method_not_allowed": "This address does not accept that kind of request.",
        "busy": "The catalogue is being updated. Try again in a moment.",
        "unavailable": "The catalogue is not available right now. Try again in a moment.",
        "searches_busy": "The server has too many photo searches under way. Try again in a "
                         "moment.",
        "server_error": "Something went wrong on the server. Try again in a moment.",
        "offline": "Could not reach the server. Check your connection and try again.",
        "slow": "The server did not answer in time. Try again in a moment.",
        "other_error": "The request could not be completed.",
        "footer": "Vitrine — recommendations by visual similarity.",
        "attributes": "Attributes",
        "filter_legend": "Filter results",
        "min_price": "Minimum price (R$)",
        "max_price": "Maximum price (R$)",
        "min_price_name": "minimum price",
        "max_price_name": "maximum price",
        "any_value": "Any",
        "attr_typed": "Attribute (key=value)",
        "filters_clear": "Clear filters",
        "filtered_by": "Filter:",
        "priced_between": "priced {low}–{high}",
        "priced_from": "priced from {low}",
        "priced_up_to": "priced up to {high}",
        "no_match_filtered": "No similar product matches this filter: change or clear it "
                             "to see more.",
        "filter_not_price": "The {field} “{value}” is not a number: write the number alone, "
                            "such as 49.90.",
        "filter_price_range": "The {field} “{value}” is not a price: write a value from 0 "
                              "to {most}.",
        "filter_price_order": "The minimum price ({low}) is above the maximum ({high}): swap "
                              "them or clear one.",
        "filter_too_many": "Too many attribute filters ({n}): at most {most} a search.",
        "filter_bad_attribute": "The attribute filter “{value}” is not written as "
                                "key=value.",
        "filter_not_shown": "{n} more sent do not fit the fields and are left out.",
    },
}

ERROR_KEYS = {404: "not_found", 405: "method_not_allowed", 409: "busy", 413: "too_large",
              422: "bad_request", 500: "server_error", 503: "unavailable"}
"""The page's own sentence for an HTTP error status (the API answers in English)."""


def pick_lang(value: str | None) -> str:
    """The page's language from ``?lang=``: its primary tag in any case ("EN", "en-US",
    "pt_BR" were Portuguese for all: helper-222), else the default."""
    primary = (value or "").strip().lower().replace("_", "-").split("-")[0]
    return primary if primary in LANGS else DEFAULT_LANG


def number(t: dict[str, str], n: int) -> str:
    """A whole number grouped as the page's language writes it: "12.345" in Portuguese,
    "12,345" in English."""
    return f"{n:,}".replace(",", t["thousands"])


def products_count(t: dict[str, str], n: int) -> str:
    """"1 produto", "2 produtos" (and "0 produtos": plural, as in English); "12.345 produtos"."""
    return t["products_count_one" if n == 1 else "products_count"].format(n=number(t, n))


def category_label(category: str) -> str:
    """A readable name for a category folder such as ``relogio_feminino``."""
    text = category.replace("_", " ").strip()
    return text[:1].upper() + text[1:] if text else "—"


def limit_number(amount: int, unit: int) -> str:
    """``amount / unit`` for a limit said in ``unit`` (MB, megapixels), in English: one decimal
    at most, rounded down, a limit never said above itself, and without a trailing zero
    ('5.2' for 5,242,880 bytes, not '5.24288'; '10', '0.3'); more decimals only for a limit
    under a tenth of the unit ('0.0009'), which one decimal would say as 0."""
    places = 1
    while amount * 10 ** places // unit == 0 and places < 12:
        places += 1
    whole, part = divmod(amount * 10 ** places // unit, 10 ** places)
    return f"{whole}.{part:0{places}d}".rstrip("0").rstrip(".")


def format_price(value: float | None, lang: str) -> str:
    """Brazilian reais: 'R$ 1.299,90' in Portuguese, 'R$1,299.90' in English; '' if unknown."""
    if value is None:
        return ""
    # to the cent half up, as a price is read ("0,125" is 0,13: helper-222), as the terminal
    # says it too (:func:`vitrine.display.cents`)
    grouped = f"{cents(value):,.2f}"
    if lang == "pt":
        return "R$\u00a0" + grouped.replace(",", "\0").replace(".", ",").replace("\0", ".")
    return "R$" + grouped


def format_chance(probability: float, lang: str) -> str:
    """A category guess's probability in percent, without the sign, as the terminal says it
    (:func:`vitrine.display.percent`: 0.9959 is "99,6", not "100", a certainty it is not)."""
    shown = display_percent(probability).rstrip("%")
    return shown.replace(".", ",") if lang == "pt" else shown


def percent(score: float) -> int:
    """A cosine similarity shown as a whole percentage (negative similarity shows as 0)."""
    return max(0, min(100, round(float(score) * 100)))
