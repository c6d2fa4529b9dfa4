"use strict";
// The phone drawer's backdrop: a tap on it closes the drawer (app.js closeDrawer).
document.getElementById("drawer-backdrop").addEventListener("click", () => closeDrawer());
