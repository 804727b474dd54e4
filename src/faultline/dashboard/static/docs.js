// Swagger UI over /openapi.json, started from a file because the page allows no inline script.
// "Authorize" takes a token (faultline token create) for the endpoints that need one.
"use strict";

window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  persistAuthorization: false,
  presets: [SwaggerUIBundle.presets.apis],
});
