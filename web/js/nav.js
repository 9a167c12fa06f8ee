// Pages without their own logic: show the navigation for a signed-in user or a visitor.
import { navFor, whoami } from "./session.js";

navFor(await whoami().catch(() => null));
