"""Reading an HTML page's POST forms the way a browser would submit them."""

from html.parser import HTMLParser


class FormInputs(HTMLParser):
    """The values a browser would submit from the page's POST forms (enough for admin forms).

    `password_values` collects any value a password input carries: write-only inputs must
    carry none.
    """

    def __init__(self):
        super().__init__()
        self.data: dict[str, str] = {}
        self.password_values: list[str] = []
        self._in_form = False
        self._textarea = self._select = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form" and (a.get("method") or "").lower() == "post":
            self._in_form = True
        if not self._in_form:
            return
        name = a.get("name")
        if tag == "input" and name:
            kind = a.get("type", "text")
            if kind == "password" and "value" in a:
                self.password_values.append(a["value"])
            if kind in {"checkbox", "radio"}:
                if "checked" in a and "disabled" not in a:
                    self.data[name] = a.get("value", "on")
            elif kind not in {"submit", "button", "file"}:
                self.data[name] = a.get("value", "")
        elif tag == "textarea" and name:
            self._textarea = name
            self.data[name] = ""
        elif tag == "select" and name:
            self._select = name
        elif tag == "option" and self._select:
            if "selected" in a or self._select not in self.data:
                self.data[self._select] = a.get("value", "")

    def handle_endtag(self, tag):
        if tag == "form":
            self._in_form = False
        elif tag == "textarea":
            self._textarea = None
        elif tag == "select":
            self._select = None

    def handle_data(self, data):
        if self._textarea:
            self.data[self._textarea] += data


def form_inputs(html: str) -> FormInputs:
    parser = FormInputs()
    parser.feed(html)
    return parser
