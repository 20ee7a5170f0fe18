// agent-server's interactive API docs: Swagger UI on this server's own /openapi.json. Nothing is
// fetched from anywhere else (no validator badge), and an entered key stays in the page's memory
// (persistAuthorization off: nothing in localStorage).
"use strict";
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    persistAuthorization: false,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
});
