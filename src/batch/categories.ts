// Categories and tags from a product title, by keywords — for catalogues that have none (the UCI Online Retail
// demo data: gift-ware titles like "WHITE HANGING HEART T-LIGHT HOLDER"). Pure.
//
// Rules are tried in order and the first category with a matching keyword wins, so specific product types
// ("MUG", "NECKLACE") come before generic decor words ("HEART", "FLOWER") and the seasonal themes come first (a
// "CHRISTMAS CARD" is shopped for as Christmas). A keyword matches a whole word of the upper-cased title (words are
// split on anything but letters, digits, "-", "'" and "&"; a trailing "." is dropped: the data truncates words
// like "NECKLACE." at its 35-character limit). Coverage on the UCI catalogue is reported in docs/data-model.md.

export const OTHER_CATEGORY = "Other";

export interface CategoryRule {
  category: string;
  keywords: readonly string[];
}

const words = (list: string) => list.split(/\s+/).filter((w) => w.length > 0);

/** The keyword → category table, in priority order. docs/data-model.md#categories mirrors it. */
export const CATEGORY_RULES: readonly CategoryRule[] = [
  {
    category: "Christmas",
    keywords: words("CHRISTMAS XMAS ADVENT SANTA REINDEER NATIVITY SNOWFLAKE SNOWMAN BAUBLE BAUBLES"),
  },
  { category: "Easter", keywords: words("EASTER") },
  {
    category: "Candles & Lights",
    keywords: words(
      "CANDLE CANDLES CANDLEHOLDER CANDLESTICK CANDLEPOT T-LIGHT T-LIGHTS TLIGHT TEALIGHT LANTERN LANTERNS LIGHT LIGHTS LAMP LAMPSHADE INCENSE NIGHTLIGHT BURNER CHANDELIER LED MATCHES",
    ),
  },
  {
    category: "Jewellery",
    keywords: words(
      "NECKLACE NECKL NECKLAC BRACELET BANGLE EARRINGS EARRING PENDANT BROOCH RING CHARM DIAMANTE BEAD BEADS JEWELLED JEWELLERY",
    ),
  },
  { category: "Mugs", keywords: words("MUG MUGS") },
  { category: "Bags", keywords: words("BAG BAGS HANDBAG PURSE SHOPPER TOTE RUCKSACK BACKPACK WALLET") },
  {
    category: "Cards & Wrap",
    keywords: words("CARD CARDS WRAP WRAPPING ENVELOPE ENVELOPES TAGS GREETING RIBBON RIBBONS TISSUE CONFETTI"),
  },
  {
    category: "Baking",
    keywords: words("CAKE CAKES CAKESTAND CUPCAKE BAKING CASES COOKIE CUTTER CUTTERS MOULD ICING"),
  },
  {
    category: "Kitchen & Dining",
    keywords: words(
      "BOWL BOWLS PLATE PLATES CUP CUPS SAUCER TEACUP CUTLERY TEA TEAPOT COFFEE CAFETIERE JUG JAR JARS TRAY LUNCH KITCHEN APRON NAPKINS NAPKIN TOWEL PAN SPOON SPOONS LADLE CHOPSTICKS EGG DISH BEAKER TUMBLER GOBLET COASTER COASTERS PLACEMAT PLACEMATS FOOD PANTRY STRAWS BOTTLE BOTTLES GLASS GLASSES BREAD BISCUIT SUGAR JAM MILK CHOPPING TRIVET CONTAINER BUCKET BIN FLASK DOILY DOILIES",
    ),
  },
  {
    category: "Home Decor",
    keywords: words(
      "FRAME MIRROR CLOCK CUSHION DOORMAT SIGN PLAQUE WALL DOORSTOP HOOK HOOKS HANGER VASE ORNAMENT DECORATION DECORATIONS HANGING WREATH GARLAND BUNTING DRAWER KNOB CABINET SHELF TILE THROW BLANKET DOOR PICTURE ART CHALKBOARD BLACKBOARD MAGNET MAGNETS DOORKNOB COAT RACK WINDMILL CHIME CHIMES",
    ),
  },
  { category: "Storage", keywords: words("BOX BOXES BASKET TIN TINS STORAGE CASE HOLDER TRUG CRATE ORGANISER") },
  {
    category: "Garden",
    keywords: words(
      "GARDEN GARDENERS PLANT PLANTER PLANTERS WATERING POT POTS SEED SEEDS BIRDHOUSE FEEDER PARASOL HERB FLOWERPOT GNOME HAMMOCK TWINE",
    ),
  },
  {
    category: "Toys & Games",
    keywords: words(
      "TOY TOYS GAME GAMES JIGSAW PUZZLE DOLL DOLLY SKIPPING SPINNING TEDDY BALL PLAYHOUSE DOMINOES MARBLES BINGO LUDO SOLDIER SOLDIERS DINOSAUR BUNNY COLOURING",
    ),
  },
  {
    category: "Stationery",
    keywords: words(
      "NOTEBOOK NOTEBOOKS PEN PENS PENCIL PENCILS ERASER ERASERS RUBBER STICKER STICKERS TAPE CALENDAR DIARY JOURNAL MEMO BOOK CRAYONS CHALK RULER SHARPENER STAMP STAMPS NOTE NOTEPAD STENCIL PAPERWEIGHT CLIPBOARD SKETCHBOOK STATIONERY ALBUM SCISSOR CALCULATOR DRAWING WRITING",
    ),
  },
  { category: "Party", keywords: words("PARTY BALLOON BALLOONS BIRTHDAY BANNER PICNIC CRACKER") },
  {
    category: "Bath & Beauty",
    keywords: words("BATH BATHROOM SOAP SPONGE TOILETRY COSMETIC MAKE-UP SHOWER TISSUES TOILET WASHBAG FLANNEL"),
  },
  {
    category: "Accessories",
    keywords: words(
      "UMBRELLA SCARF GLOVES GLOVE HAT SLIPPERS SLIPPER WARMER KEYRING KEY-RING KEY-CHAINS KEYCHAIN HAIR CLIP CLIPS SLIDE SLIDES COMB SUNGLASSES LUGGAGE PASSPORT",
    ),
  },
  { category: "Baby & Kids", keywords: words("BABY BIB KIDS CHILDS CHILDRENS CHILDREN'S NURSERY") },
  {
    category: "Crafts & Sewing",
    keywords: words("SEWING FELTCRAFT CROCHET KNITTING BUTTONS BUTTON CRAFT REEL THREAD NEEDLE EMBROIDERY KIT"),
  },
  // Decorative motifs last: "HEART MUG" is a mug, a lone "WICKER HEART" is decor.
  {
    category: "Home Decor",
    keywords: words(
      "HEART HEARTS WICKER ARTIFICIAL FLOWER FLOWERS CURTAIN MAT CHAIR STOOL TABLE CHEST FLAG PENNANT BELL BELLS MOBILE LETTERS BLOCK COVER DOORSIGN PONY HORSE OWL BIRD BUTTERFLY STAR FEATHER POUFFE WINDSOCK FAN",
    ),
  },
];

/** Colour words, kept as tags (a strong similarity signal in gift-ware). */
export const COLOUR_WORDS: ReadonlySet<string> = new Set(
  words(
    "RED PINK BLUE WHITE BLACK GREEN IVORY CREAM SILVER GOLD PURPLE YELLOW ORANGE BROWN TURQUOISE LILAC GREY AMBER",
  ),
);

/** Tags per product at most (the session's affinity tokens take the first 8 as well). */
export const MAX_TAGS = 8;

const RULE_SETS = CATEGORY_RULES.map((rule) => ({ category: rule.category, keywords: new Set(rule.keywords) }));

/** The words of a title as matched: upper case, split on separators, a trailing "." dropped. */
export function titleWords(title: string): string[] {
  return title
    .toUpperCase()
    .split(/[^A-Z0-9'&.-]+/)
    .map((w) => w.replace(/\.+$/, ""))
    .filter((w) => w.length > 0);
}

/** The category of a title: the first rule with a matching word, else "Other". */
export function categorize(title: string): string {
  const found = new Set(titleWords(title));
  for (const rule of RULE_SETS) {
    for (const word of found) if (rule.keywords.has(word)) return rule.category;
  }
  return OTHER_CATEGORY;
}

/** Tags of a title: its colour words and category keywords, lower case, in title order, at most MAX_TAGS. */
export function tagsOf(title: string): string[] {
  const tags: string[] = [];
  for (const word of titleWords(title)) {
    if (tags.length >= MAX_TAGS) break;
    const known = COLOUR_WORDS.has(word) || RULE_SETS.some((rule) => rule.keywords.has(word));
    const tag = word.toLowerCase();
    if (known && !tags.includes(tag)) tags.push(tag);
  }
  return tags;
}
