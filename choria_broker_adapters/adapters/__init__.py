"""Protocol adapter types. `registry` names them; each type's runtime lives in its own module."""
