// Run once by the mongo image on the first start of an empty data directory
// (/docker-entrypoint-initdb.d), authenticated as the root user: creates the user the
// workers and the gateway connect as, allowed to read and write the orders database only.
const name = process.env.MONGO_SERVICE_USER;
const password = process.env.MONGO_SERVICE_PASSWORD;
const database = process.env.MONGO_SERVICE_DATABASE;
if (!name || !password || !database) {
  throw new Error("MONGO_SERVICE_USER, MONGO_SERVICE_PASSWORD and MONGO_SERVICE_DATABASE must be set");
}
db.getSiblingDB("admin").createUser({
  user: name,
  pwd: password,
  roles: [{ role: "readWrite", db: database }],
});
print(`created user ${name} with readWrite on ${database}`);
