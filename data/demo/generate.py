"""Generate the three small labelled demo corpora that the default offline study runs on.

The corpora are synthetic stand-ins for the paper's three tasks: IMDb-like movie reviews (binary sentiment),
Spotify-like app reviews (1..5 star rating) and HuffPost-like news headlines (five topics). Every text is
assembled from a small compositional grammar (templates with nested slots filled from word lists), then a
documented amount of label noise, exact duplicate rows and empty/whitespace-only texts is injected so that the
pipeline's cleaning and dropping steps have something to do.

Standard library only and fully deterministic: each corpus draws from its own ``random.Random`` seeded with a
string derived from ``--seed`` (string seeds are hashed with SHA-512, not Python's randomised ``hash``),
lists are only ever iterated in their written order, and nothing reads the clock. The same seed always
reproduces the same bytes.

Usage::

    python data/demo/generate.py [--seed 7] [--out data/demo]
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import os
import random
import re
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

DEFAULT_SEED = 7
DEFAULT_OUT = Path(__file__).resolve().parent

Options = Sequence[str] | Callable[[random.Random], str]  # a slot's phrases, or a function drawing one
Grammar = dict[str, Options]  # slot name -> options


# ----------------------------------------------------------------------------------------------------------
# Grammar machinery
# ----------------------------------------------------------------------------------------------------------

_SLOT = re.compile(r"\{(\w+)\}")


def _phrases(block: str) -> tuple[str, ...]:
    """Split a ``|``-separated block into phrases; newlines are ignored, ``~`` is the empty phrase."""
    parts = (" ".join(p.split()) for p in block.split("|"))
    return tuple("" if p == "~" else p for p in parts if p)


def _words(block: str) -> tuple[str, ...]:
    """Split a whitespace-separated block into single words."""
    return tuple(block.split())


def zipf(options: Sequence[str], offset: float = 1.0) -> Callable[[random.Random], str]:
    """Slot filler preferring earlier options (weight ``1 / (rank + offset)``), like real word frequencies."""
    cum, total = [], 0.0
    for rank in range(len(options)):
        total += 1.0 / (rank + offset)
        cum.append(total)

    def pick(rng: random.Random) -> str:
        return rng.choices(options, cum_weights=cum)[0]

    return pick


def expand(
    rng: random.Random, template: str, grammar: Grammar, used: set[str] | None = None, depth: int = 0
) -> str:
    """Fill every ``{slot}`` in ``template`` left to right, recursing into the chosen phrases.

    ``used`` collects the non-empty phrases already chosen for this text; a slot re-draws (a few times) rather
    than repeat one, so a review does not say "great, great and excellent". Share it across the sentences of
    one text.
    """
    if depth > 12:
        raise RecursionError(f"grammar recursion too deep while expanding {template!r}")
    used = set() if used is None else used

    def fill(match: re.Match[str]) -> str:
        options = grammar[match.group(1)]
        for _ in range(6):
            choice = options(rng) if callable(options) else rng.choice(options)
            if not choice or choice not in used:
                break
        used.add(choice)
        return expand(rng, choice, grammar, used, depth + 1)

    return _SLOT.sub(fill, template)


_SPACE_BEFORE_PUNCT = re.compile(r"\s+([,.;:!?])")
_DOUBLE_COMMA = re.compile(r",\s*,")
_ARTICLE = re.compile(r"\b([Aa]) ([aeiouAEIOU])(?!ni|se|su|ro\b|ne\b)")
_SENTENCE_START = re.compile(r"(^|[.!?]\s+)([a-z])")


def tidy(text: str) -> str:
    """Collapse whitespace, drop spaces before punctuation and fix ``a`` -> ``an`` before vowels."""
    text = " ".join(text.split())
    text = _SPACE_BEFORE_PUNCT.sub(r"\1", text)
    text = _DOUBLE_COMMA.sub(",", text)
    return _ARTICLE.sub(lambda m: f"{m.group(1)}n {m.group(2)}", text)


def capitalize_sentences(text: str) -> str:
    """Upper-case the first letter of the text and of every sentence after ``.``, ``!`` or ``?``."""
    return _SENTENCE_START.sub(lambda m: m.group(1) + m.group(2).upper(), text)


def title_case(text: str) -> str:
    """HuffPost-style title case: upper-case the first letter of every word, leave the rest alone."""

    def cap(word: str) -> str:
        for i, ch in enumerate(word):
            if ch.isalpha():
                return word[:i] + ch.upper() + word[i + 1 :]
            if ch.isdigit():
                return word
        return word

    return " ".join(cap(w) for w in text.split(" "))


def word_count(text: str) -> int:
    """Whitespace word count, the unit the length ranges below are given in."""
    return len(text.split())


def end_mark(rng: random.Random, exclaim: float = 0.0) -> str:
    """A sentence-final mark: mostly a full stop, sometimes one or more exclamation marks."""
    if rng.random() < exclaim:
        return rng.choice(("!", "!", "!!", "!!!"))
    return "."


def style_case(rng: random.Random, text: str, p_lower: float, p_shout: float) -> str:
    """Realistic casing noise: sometimes the whole text in lower case, sometimes one word SHOUTED."""
    if rng.random() < p_lower:
        text = text.lower()
    if rng.random() < p_shout:
        words = text.split(" ")
        candidates = [i for i, w in enumerate(words) if len(w) > 3 and w.isalpha()]
        if candidates:
            i = rng.choice(candidates)
            words[i] = words[i].upper()
            text = " ".join(words)
    return text


def copula_phrase(
    singular: Sequence[str], plural: Sequence[str], sing_verbs: Sequence[str], plur_verbs: Sequence[str]
) -> Callable[[random.Random], str]:
    """Slot filler picking a noun phrase plus a verb that agrees (``the cast was``, ``the ads are``)."""
    n_sing, n_plur = len(singular), len(plural)

    def pick(rng: random.Random) -> str:
        if rng.random() < n_sing / (n_sing + n_plur):
            return f"{rng.choice(singular)} {rng.choice(sing_verbs)}"
        return f"{rng.choice(plural)} {rng.choice(plur_verbs)}"

    return pick


def polar_grammar(base: Grammar, polar: dict[str, tuple[Options, Options]], positive: bool) -> Grammar:
    """Bind ``pro_*`` slots to the label's polarity and ``con_*`` slots to the opposite one.

    ``polar`` maps a slot stem to its (positive options, negative options); one template set thereby serves
    both labels, so sentence shapes carry no label information, only the words chosen into them do.
    """
    grammar = dict(base)
    for stem, (pos, neg) in polar.items():
        grammar[f"pro_{stem}"] = pos if positive else neg
        grammar[f"con_{stem}"] = neg if positive else pos
    return grammar


# ----------------------------------------------------------------------------------------------------------
# Shared word lists
# ----------------------------------------------------------------------------------------------------------

FIRST_NAMES = _words("""
    Ana Ben Clara Dev Elena Felix Grace Hugo Ines Jonah Kira Leo Maya Nico Olivia Pablo Quinn Rosa Sam Tara
    Umar Vera Wes Ximena Yusuf Zoe Amara Bruno Chloe Dante Esme Farid Greta Hassan Ivy Jamal Keiko Lars Mira
    Nadia Omar Priya Rafael Sofia Tomas Uma Viktor Wanda Yara Zane Aisha Boris Carmen Diego Eliza Frank Gloria
    Henry Isla Jack Lena Marco Nora Oscar Petra Ruth Simon Tessa Victor Willa Aaron Bianca Caleb Daria Emil
    Fiona Gabe Hana Ian Julia Kofi Leila Milo Nina Otto Paula Reza Selma Theo Vivian Wyatt Adele Cyrus Daphne
    Ezra Freya Gideon Harper Imani Joel Kamala Lucas Marisol Naomi Orla Pedro Rhea Silas Talia Vince Zara Abel
    Beatriz Cosmo Delia Elias Faye Gus Hattie Idris Juno Kai Lucia Mateo Nell Odile Percy Rosalind Soren Thea
    Ulises Valentina Walter Yasmin Arjun Bette Conrad Dolores Edgar Flora Gianni Helga Ismael Jolene Kwame
    Lorna Magnus Nikhil Ophelia Pilar Roland Sunita Tobias Ursula Vikram Winona Alejandro Birgit Cormac Dinah
    Esteban Fatima Gordon Hyun Ingrid Jasper Kenji Lionel Mercedes Nolan Oksana Phoebe Ramon Svetlana Teodoro
    Wilhelmina
""")

LAST_NAMES = _words("""
    Abbott Alvarez Bauer Bennett Brooks Castillo Chen Collins Dawson Delgado Ellis Evans Fischer Flores Foster
    Garcia Grant Hale Hayes Herrera Holt Ibarra Jensen Kaplan Keller Kim Larsen Lopez Mahoney Marsh Mendez
    Moreau Nakamura Navarro Novak Okafor Olsen Ortiz Park Patel Pearson Quintero Ramos Reyes Rhodes Romero
    Russo Sato Schmidt Serrano Shah Silva Sokolov Stone Sullivan Tanaka Torres Turner Vance Varga Vega Walsh
    Weber Whitaker Wong Yilmaz Young Zhang Ziegler Adeyemi Barker Carver Duarte Eriksen Fontaine Galloway
    Hargrove Iverson Jovanovic Kowalski Lindqvist Mbeki Nguyen Oyelaran Pham Quigley Rourke Santoro Thorne
    Underwood Valdez Winslow Xu Yamamoto Zamora Ashby Blackwood Calloway Drummond Everly Fairbanks Abernathy
    Bachmann Castellanos Dimitriou Eastwood Ferreira Gutierrez Holloway Ishikawa Jaramillo Kessler Lombardi
    Montgomery Nakashima Oduya Petrov Quinones Rasmussen Salazar Takahashi Urquhart Vasquez Wakefield Yoon
    Zielinski Achebe Brennan Cardenas Donnelly Espinoza Forsythe Greenberg Huang Ivanova Jankowski Kuznetsov
    Lindgren Moreno Nwosu Ostrowski Pellegrino Rinaldi Schultz Townsend Ueda Villanueva Whitfield Yeager
    Zeller
""")

CITIES = _phrases("""
    Chicago | Denver | Boston | Seattle | Austin | Atlanta | Portland | Phoenix | Detroit | Miami |
    Nashville | Baltimore | Houston | Cleveland | Memphis | Tampa | Oakland | Sacramento | Pittsburgh |
    Milwaukee | Minneapolis | Charlotte | Orlando | Raleigh | Richmond | Tucson | Omaha | Albuquerque |
    Buffalo | Louisville | Kansas City | San Diego | New Orleans | Salt Lake City | St. Louis | Cincinnati |
    Indianapolis | Columbus | Honolulu | Anchorage | Boise | Spokane | Savannah | Charleston | El Paso |
    Fresno | Madison | Providence | Toronto | Montreal | Vancouver | London | Manchester | Dublin | Lisbon |
    Madrid | Barcelona | Paris | Lyon | Berlin | Munich | Vienna | Prague | Rome | Milan | Naples | Athens |
    Istanbul | Cairo | Lagos | Nairobi | Mumbai | Seoul | Tokyo | Osaka | Manila | Sydney | Melbourne |
    Auckland | Mexico City | Bogota | Lima | Buenos Aires | Santiago | Havana | Oslo | Stockholm |
    Copenhagen | Helsinki | Reykjavik | Warsaw | Budapest
""")

NUMBERS_SMALL = _words("3 4 5 6 7 8 9 10 11 12 13 15 17 20 21 25 30 50")


def full_name(rng: random.Random) -> str:
    """A random first + last name."""
    return f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"


def small_number(rng: random.Random) -> str:
    """A listicle-sized number."""
    return rng.choice(NUMBERS_SMALL)


# ----------------------------------------------------------------------------------------------------------
# Movie reviews (IMDb-like, binary sentiment)
# ----------------------------------------------------------------------------------------------------------

MOVIE_ASPECTS_SING = _phrases("""
    the cast | the plot | the director's vision | the acting | the script | the soundtrack | the score |
    the cinematography | the ending | the pacing | the dialogue | the lead performance | the supporting cast |
    the editing | the story | the screenplay | the third act | the first half | the second half |
    the opening scene | the final twist | the villain | the chemistry between the leads |
    the production design | the camera work | the humor | the fight choreography | the sound design |
    the world-building | the runtime | the premise | the tone | the direction | the music | the animation |
    the lighting | the twist | the climax | the romance | the central mystery | the sequel | the remake |
    the finale | the writing | the narration | the atmosphere | the set design | the makeup | the hero's arc |
    the backstory | the subplot | the casting | the ensemble | the lead actress | the lead actor |
    the young star | the comic relief | the final battle | the car chase | the courtroom scene |
    the dinner scene | the heist sequence | the love story | the message | the prologue | the epilogue |
    the post-credits scene | the marketing | the heist | the origin story | the monster design |
    the screenplay adaptation | the voice cast | the production | the period detail | the stunt work |
    the color grading | the 3D | the IMAX version | the director's cut | the fight scene
""")

MOVIE_ASPECTS_PLUR = _phrases("""
    the performances | the characters | the visual effects | the action sequences | the costumes |
    the set pieces | the jokes | the flashbacks | the songs | the special effects | the battle scenes |
    the side characters | the dream sequences | the musical numbers | the scares | the plot twists |
    the kids in the cast | the landscapes | the dialogue scenes | the last twenty minutes
""")

COPULA_SING = _phrases("was | was | was | is | felt | seemed | came across as | turned out to be | looked")
COPULA_PLUR = _phrases("""
    were | were | were | are | felt | seemed | came across as | turned out to be | looked
""")

MOVIE_POS_ADJ = _words("""
    great good brilliant excellent wonderful fantastic beautiful amazing perfect superb fun gripping moving
    stunning gorgeous charming clever witty powerful haunting thrilling tense heartfelt funny hilarious
    memorable engaging delightful fresh original sharp elegant riveting compelling masterful tender bold
    inventive captivating lovely satisfying breathtaking touching smart nuanced rich vivid confident assured
    polished electric magnetic absorbing spellbinding stellar terrific strong solid impressive enjoyable
    entertaining exhilarating warm luminous graceful poignant stirring dazzling crisp layered thoughtful
    ambitious daring playful joyful sublime phenomenal flawless wondrous striking authentic believable
    unpredictable suspenseful uplifting rewarding refreshing sincere lush inspired outstanding marvelous
    exquisite lively heartwarming spectacular enchanting mesmerizing ravishing hypnotic exuberant propulsive
    razor-sharp devastating affecting understated soulful tremendous glorious sparkling timeless irresistible
    invigorating transcendent
""")

MOVIE_NEG_ADJ = _words("""
    bad boring terrible awful dull poor weak horrible stupid disappointing predictable clumsy bloated lifeless
    wooden messy tedious forgettable overlong shallow incoherent grating lazy derivative flat bland dreadful
    painful laughable uninspired sloppy confusing pretentious stiff cringeworthy mediocre hollow tiresome
    joyless muddled unfunny overwrought annoying generic sluggish choppy ridiculous frustrating soulless
    lackluster pointless plodding listless awkward clunky lame stale cheap trite contrived dreary murky drab
    overacted underwritten unconvincing forced hammy noisy chaotic aimless limp rushed hokey cartoonish
    miscast exhausting unbearable insufferable dismal stilted nonsensical bizarre dumb flimsy amateurish
    incompetent lumbering ponderous turgid vapid mindless smug misguided botched dire abysmal shoddy overblown
    humorless mawkish saccharine interminable pedestrian inert tone-deaf
""")

MOVIE_POS_CLAIMS = _phrases("""
    the acting felt completely natural | the pacing never let up | the score soared in all the right places |
    the twist actually landed | every scene earned its place | the cast had real chemistry |
    the dialogue crackled | the ending stuck with me for days | the director knows exactly what she's doing |
    the script trusts its audience | the performances carry every scene | the plot kept me guessing |
    the jokes landed every time | the cinematography is worth the ticket alone | the soundtrack is a gem |
    the story builds to a perfect finale | the characters felt like real people |
    the villain was genuinely scary | the tension builds beautifully | the ensemble works like a dream |
    the final act pays everything off | the lead gives a career-best performance |
    the film looks incredible on a big screen | the visuals are stunning from start to finish |
    the writing is sharp and surprising | the production design transports you to another century |
    the leads bounce off each other beautifully |
    the screenplay juggles three timelines without breaking a sweat |
    the kid actors are astonishingly natural | the final shot is pure poetry |
    every frame could hang in a gallery | the comedy comes from real character |
    the action is staged with real clarity | the score does a lot of quiet heavy lifting |
    the story respects grief without wallowing in it | the villain's motives actually make sense |
    the costumes alone deserve an Oscar | the editing in the finale is breathless |
    the screenplay crackles with wit and warmth | the supporting players steal every scene they're in |
    the period detail is immaculate
""")

MOVIE_NEG_CLAIMS = _phrases("""
    the plot dragged | the acting felt wooden | the pacing dragged in the middle |
    the dialogue was painfully clunky | the ending was rushed | the twist was obvious from the trailer |
    the jokes fell flat | the cast had zero chemistry | the script is full of holes | the story goes nowhere |
    the characters were paper thin | the villain was a cartoon | the soundtrack drowned out the dialogue |
    the editing was all over the place | the effects looked cheap | the third act falls apart |
    the director seems bored with his own film | the performances were phoned in | the plot makes no sense |
    the runtime is at least forty minutes too long | the sequel adds nothing new | the romance felt forced |
    the film forgets its own rules | nothing in the story is earned | the lead is badly miscast |
    the production design looks like a cheap theme park |
    the leads have all the chemistry of two filing cabinets | the screenplay trips over its own timelines |
    the kid actors are shrill and irritating | the final shot makes no sense whatsoever |
    the CGI looks unfinished | the jokes are recycled sitcom gags |
    the action is shot so shakily you can't follow it | the score never stops telling you what to feel |
    the story milks tragedy for cheap tears | the villain's plan is nonsense | the costumes look rented |
    the editing in the finale is incomprehensible | the screenplay wheezes from one cliché to the next |
    the supporting players are wasted on thankless roles | the period detail is sloppy
""")

MOVIE_POS_VERDICTS = _phrases("""
    I'd recommend it to anyone | easily one of the best films of the year | worth every minute |
    I'll be watching it again | a must-see | go see it on the biggest screen you can find |
    an instant classic | ten out of ten | it deserves every award it gets | I can't wait to see it again |
    one of the best things I've seen in years | absolutely worth the ticket |
    a real treat from start to finish | this is why I love going to the movies | highly recommended |
    you won't regret it | my new favorite film | a triumph | believe the hype | I left the theater smiling |
    bring tissues and bring friends | it earns every bit of its praise | a crowd-pleaser in the best sense |
    grab popcorn and enjoy | the rare blockbuster with a brain
""")

MOVIE_NEG_VERDICTS = _phrases("""
    save your money | I walked out halfway through | skip this one | a total waste of two hours |
    one of the worst films I've seen in years | avoid at all costs | I want my time back |
    not worth the ticket | wait for it to hit streaming, or better yet don't | a huge letdown |
    I regret watching it | a complete mess | I can't recommend it to anyone |
    the worst thing I've seen this year | don't bother | easily the most disappointing film of the year |
    I nearly asked for a refund | a forgettable mess | I won't be watching it again |
    what a waste of a good cast | even the popcorn couldn't save it | a cynical cash grab |
    stick with the original | it's dead on arrival | the rare blockbuster without a pulse
""")

MOVIE_POS_EXPERIENCE = _phrases("""
    I was on the edge of my seat | I laughed the whole way through | I cried at the ending |
    I forgot to check my phone even once | the whole theater applauded at the end |
    I got chills more than once | I couldn't look away | I was grinning like an idiot |
    my {relation} and I talked about it all the way home | time flew by | I was hooked from the first scene |
    I'm still thinking about it | my cheeks hurt from laughing | I bought a second ticket the next day |
    I hugged my mom after the credits | the audience gasped at the twist
""")

MOVIE_NEG_EXPERIENCE = _phrases("""
    I checked my watch every ten minutes | I nearly fell asleep | I kept waiting for something to happen |
    half the theater was on their phones | my {relation} fell asleep before the midpoint |
    I rolled my eyes more times than I can count | I groaned out loud at the ending |
    I couldn't wait for it to be over | I was bored stiff | people were walking out around me |
    I struggled to stay awake | I forgot it the moment the credits rolled | I started counting ceiling tiles |
    I scrolled through my emails halfway in | the audience laughed at the serious scenes | I fell asleep twice
""")

MOVIE_POS_WHATA = _words("treat gem ride triumph delight joy masterpiece achievement surprise blast film")
MOVIE_NEG_WHATA = _words("mess slog letdown disaster bore waste snoozefest trainwreck chore dud failure")
MOVIE_POS_FEEL = _phrases("""
    loved it | adored it | really enjoyed it | loved every minute | enjoyed every second
""")
MOVIE_NEG_FEEL = _phrases("hated it | couldn't stand it | regretted it | disliked it | found it unbearable")
MOVIE_POS_CMP = _words("better stronger funnier smarter braver richer tighter warmer")
MOVIE_NEG_CMP = _words("worse weaker duller dumber flatter messier slower emptier")
MOVIE_POS_STATE = _words("bored lost distracted annoyed confused restless")
MOVIE_NEG_STATE = _words("moved surprised invested entertained convinced impressed amused scared")
MOVIE_POS_MOMENT = _words("memorable funny exciting genuine surprising tense moving clever honest")
MOVIE_NEG_MOMENT = _words("dull boring wasted false slow awkward forced lazy")
MOVIE_POS_INTENS = _words("wonderfully beautifully brilliantly endlessly gloriously")
MOVIE_NEG_INTENS = _words("painfully embarrassingly hopelessly woefully achingly")

MOVIE_GENRES = _phrases("""
    thriller | horror film | romantic comedy | war drama | documentary | animated feature | sci-fi epic |
    western | heist movie | coming-of-age story | musical | period drama | superhero movie | crime drama |
    mystery | slasher | road movie | biopic | courtroom drama | satire | spy thriller | family film |
    fantasy adventure | psychological thriller | sports drama | disaster movie | mockumentary | noir |
    indie drama | creature feature | political thriller | space opera | buddy comedy | martial arts film |
    zombie movie | epic romance | legal drama | teen comedy | historical epic | found-footage horror |
    dance movie | survival thriller
""")

MOVIE_DESCRIPTORS = _words("""
    retired young widowed ambitious disgraced reclusive teenage aging stubborn exiled grieving struggling
    rookie brilliant lonely jaded idealistic former undercover estranged orphaned eccentric paranoid
    charismatic washed-up penniless fearless shy heartbroken
""")

MOVIE_PROFESSIONS = _words("""
    detective nurse boxer pianist chef astronaut teacher soldier lawyer journalist farmer surgeon painter
    pilot burglar priest mechanic scientist dancer sheriff spy architect librarian fisherman photographer
    novelist magician smuggler diplomat firefighter translator beekeeper violinist taxidermist mountaineer
    gambler midwife hacker cartographer bartender carpenter nun astronomer courier paramedic jockey
    ventriloquist stunt-driver clockmaker tailor sommelier locksmith archaeologist zookeeper cellist poet
    comedian bodyguard assassin lighthouse-keeper
""")

MOVIE_ACTIONS = _phrases("""
    returns to her hometown | tries to pull off one last job | falls for the wrong person |
    uncovers a conspiracy | has to raise her late sister's kids | gets stranded on a remote island |
    starts receiving letters from the future | is framed for a murder | joins a traveling circus |
    searches for a missing brother | inherits a crumbling hotel | trains for one final fight |
    wakes up with no memory | takes on a corrupt mayor | leads a mission to Mars |
    has to survive a single night in the woods | reunites an old band | befriends a talking fox |
    discovers the town's dark secret | competes in a national baking contest |
    tries to win back her ex-husband | smuggles refugees across the border | hunts a serial killer |
    opens a restaurant with his estranged father | fakes her own death | kidnaps a billionaire's dog |
    chases a legendary white whale | builds a robot to replace his wife |
    swaps bodies with her teenage daughter | gets trapped in a time loop | coaches a hopeless hockey team |
    stumbles onto a bank robbery | investigates a string of disappearances | sails around the world alone |
    tries to stop an alien invasion
""")

MOVIE_PLACES = _phrases("""
    a small fishing town | 1970s Detroit | a space station | wartime London | a snowed-in cabin |
    a Tokyo hotel | rural Montana | a sinking ship | a boarding school | the Scottish highlands |
    a dying mining town | a floating city | Paris in the twenties | a desert highway | a haunted lighthouse |
    a crumbling Venetian palazzo | an Arctic research base | a Brooklyn bodega | a Mumbai film studio |
    a Texas oil field | a Parisian bakery | a nuclear submarine | an abandoned amusement park |
    a Kenyan safari lodge | a Catholic orphanage | a neon-lit Hong Kong | a prairie farmhouse |
    a Moscow embassy | a Vegas casino
""")

MOVIE_TITLE_ADJ = _words("""
    Silent Broken Last Hidden Crimson Hollow Golden Distant Frozen Burning Forgotten Paper Glass Iron Midnight
    Northern Wild Quiet Velvet Electric Salt Copper Long Lonely Bright Secret Lost Savage Gentle Black Scarlet
    Emerald Shattered Endless Sleeping Violent Sacred Pale Restless Fallen Tender Cruel
""")

MOVIE_TITLE_NOUN = _words("""
    Harbor Orchard Kingdom River Signal Garden Horizon Empire Letters Tide Winter Crown Mirror Road Lantern
    Machine Witness Summer Echo Storm Frontier Canyon Wolves Hour Sparrow Bridge Flame Country Island Saints
    Valley Prophet Orchestra Carnival Highway Prisoner Daughters Assassin Meridian Lagoon Citadel Outpost
""")

MOVIE_RELATIONS = _words("""
    wife husband partner girlfriend boyfriend sister brother dad mom roommate friend kids son daughter
""")
MOVIE_WHEN = _phrases("""
    last weekend | on a flight | at a late screening | on opening night | at a film festival |
    on a rainy Sunday | at the drive-in | on a whim | after months of waiting | at a packed matinee |
    on streaming last night | during a snowstorm | on my birthday | on a first date |
    at an early press screening | at a sold-out premiere | on a long-haul flight to Singapore |
    at a midnight showing | on a lazy Saturday afternoon | on a cheap Tuesday ticket
""")

MOVIE_HEDGES = _phrases("""
    ~ | ~ | ~ | ~ | ~ | ~ | honestly, | frankly, | to be fair, | in my opinion, | I have to say |
    for what it's worth, | personally, | I think | I felt that | if I'm honest, | overall, |
    all things considered, | believe me, | trust me, | admittedly, | I'll admit | look, |
    without spoiling anything, | let's be clear: | as a lifelong fan of the genre, | speaking as a parent, |
    as someone who read the novel, | no exaggeration,
""")

MOVIE_INTENS = _phrases("""
    ~ | ~ | ~ | ~ | really | very | truly | incredibly | genuinely | absolutely | remarkably | surprisingly |
    pretty | quite | so | utterly | thoroughly | deeply | wildly | downright | consistently | oddly |
    strangely | unexpectedly | {pro_intens} | just | mostly | frankly
""")

MOVIE_MILD = _phrases("""
    ~ | ~ | a bit | a little | somewhat | slightly | kind of | at times | occasionally | a touch
""")

MOVIE_BASE: Grammar = {
    "aspect_copula": copula_phrase(MOVIE_ASPECTS_SING, MOVIE_ASPECTS_PLUR, COPULA_SING, COPULA_PLUR),
    "aspect_was": copula_phrase(MOVIE_ASPECTS_SING, MOVIE_ASPECTS_PLUR, ("was", "is"), ("were", "are")),
    "the_aspect": MOVIE_ASPECTS_SING + MOVIE_ASPECTS_PLUR,
    "intens": MOVIE_INTENS,
    "mild": MOVIE_MILD,
    "hedge": MOVIE_HEDGES,
    "genre": MOVIE_GENRES,
    "relation": MOVIE_RELATIONS,
    "when": MOVIE_WHEN,
    "person": full_name,
    "city": CITIES,
    "title": lambda rng: (
        f"{rng.choice(('The ', 'The ', ''))}{rng.choice(MOVIE_TITLE_ADJ)} {rng.choice(MOVIE_TITLE_NOUN)}"
    ),
    "premise": _phrases("""
        a {descriptor} {profession} who {action} | two {profession}s stuck in {place} |
        a {descriptor} {profession} in {place} | a family in {place} | a {profession} who {action} in {place}
    """),
    "descriptor": MOVIE_DESCRIPTORS,
    "profession": MOVIE_PROFESSIONS,
    "action": MOVIE_ACTIONS,
    "place": MOVIE_PLACES,
    "character": _phrases("""
        the heroine | the detective | the old man | a little girl | the mayor | the captain | the twins |
        her mother | the stranger | the kid | the con man | the widow | the lead singer | the robot
    """),
    "scene_action": _phrases("""
        sings to a crowd of strangers | climbs a burning tower | confesses everything at a funeral |
        dances alone in a laundromat | races a train across the desert | reads a letter out loud |
        hides in a walk-in freezer | teaches a parrot to swear | breaks down in a parking garage |
        fixes an old motorcycle | gets lost in a hedge maze | wins a poker game with nothing
    """),
    "scene_action_ing": _phrases("""
        buying groceries | burying a suitcase | rowing across a lake | waking from a nightmare |
        arguing with a waiter | painting a mural | packing up an apartment | jogging through fog
    """),
    "runtime": _phrases("""
        just over two hours | a brisk ninety minutes | nearly three hours | two and a half hours | 104 minutes
    """),
    "the_film": _phrases("the film | this movie | the movie | it | this one | the whole thing | {title}"),
    "comparand": _phrases("""
        the original | the book | the first film | the trailer suggested | I expected |
        most of what's in theaters right now | the director's last film | the previous sequel |
        the reviews said
    """),
    "claim": _phrases("""
        {aspect_copula} {intens} {pro_adj} | {aspect_copula} {intens} {pro_adj} | {pro_fixed} |
        {aspect_copula} {pro_adj} and {pro_adj} |
        {aspect_copula} {intens} {pro_adj}, {pro_adj} and {pro_adj} |
        {aspect_copula} {pro_adj}, and {the_aspect} even more so |
        {pro_fixed}, and {aspect_copula} {pro_adj} |
        the scene where {character} {scene_action} is {intens} {pro_adj}
    """),
    "anticlaim": _phrases("{aspect_copula} {mild} {con_adj} | {con_fixed}"),
}

MOVIE_POLAR: dict[str, tuple[Options, Options]] = {
    "adj": (zipf(MOVIE_POS_ADJ), zipf(MOVIE_NEG_ADJ)),
    "fixed": (zipf(MOVIE_POS_CLAIMS), zipf(MOVIE_NEG_CLAIMS)),
    "verdict": (zipf(MOVIE_POS_VERDICTS), zipf(MOVIE_NEG_VERDICTS)),
    "experience": (zipf(MOVIE_POS_EXPERIENCE), zipf(MOVIE_NEG_EXPERIENCE)),
    "whata": (MOVIE_POS_WHATA, MOVIE_NEG_WHATA),
    "feel": (MOVIE_POS_FEEL, MOVIE_NEG_FEEL),
    "cmp": (MOVIE_POS_CMP, MOVIE_NEG_CMP),
    "state": (MOVIE_POS_STATE, MOVIE_NEG_STATE),
    "moment": (MOVIE_POS_MOMENT, MOVIE_NEG_MOMENT),
    "intens": (MOVIE_POS_INTENS, MOVIE_NEG_INTENS),
}

# Sentence kinds: (name, weight, templates, carries the label?); pro_* slots take the review's polarity.
MOVIE_SENTENCES: tuple[tuple[str, int, tuple[str, ...], bool], ...] = (
    ("claim", 28, ("{hedge} {claim}",), True),
    (
        "negated",
        4,
        _phrases("""
            {aspect_was} not {con_adj} at all | {aspect_was} never {con_adj} | I wouldn't call it {con_adj} |
            I wouldn't call {the_aspect} {con_adj} | {aspect_was} anything but {con_adj} |
            {aspect_was} far from {con_adj} | there wasn't a single {con_moment} moment |
            I can't say {the_aspect} was {con_adj} | I was never once {con_state} |
            at no point was I {con_state} | no one could call this {con_adj} |
            it isn't {con_adj}, it's {intens} {pro_adj} | not {con_adj}, not even a little
        """),
        True,
    ),
    (
        "contrast",
        5,
        _phrases("""
            {anticlaim}, but {claim} | {anticlaim} but {claim} | although {anticlaim}, {claim} |
            sure, {anticlaim}, but {claim} | {anticlaim}; still, {claim} | {anticlaim}, yet {claim} |
            {claim} even though {anticlaim} | {claim}, even if {anticlaim} | {anticlaim}. That said, {claim} |
            {anticlaim}, and yet {claim} | {anticlaim}, but honestly {claim}
        """),
        True,
    ),
    ("verdict", 14, _phrases("{hedge} {pro_verdict} | {pro_verdict} | overall, {pro_verdict}"), True),
    (
        "neutral",
        8,
        _phrases("""
            I saw {title} {when} with my {relation} | {title} is a {genre} about {premise} |
            it's a {genre} about {premise} | directed by {person}, it stars {person} as {premise} |
            we watched it {when} | I went in knowing nothing about it | I had read the book before watching |
            my {relation} recommended it | {person} plays {premise} |
            it's basically a {genre} set in {place} | the trailer made it look like a {genre} |
            I finally caught {title} {when} | there's a scene where {character} {scene_action} |
            the film opens with {character} {scene_action_ing} | it clocks in at {runtime} |
            it was shot on location in {place} | the budget was reportedly tiny |
            this is the second {genre} from {person} this year | the film follows {premise}
        """),
        False,
    ),
    ("experience", 10, _phrases("{pro_experience} | {hedge} {pro_experience}"), True),
    ("exclaim", 7, _phrases("what a {pro_whata} | {pro_feel} | {intens} {pro_adj} | just {pro_adj}"), True),
    (
        "question",
        3,
        _phrases("""
            who knew a {genre} could be this {pro_adj}? | {con_adj}? Not for a second |
            what else is there to say? {pro_verdict} | did I expect it to be this {pro_adj}? No
        """),
        True,
    ),
    (
        "compare",
        4,
        _phrases("{the_film} is {pro_cmp} than {comparand} | {pro_cmp} than {comparand}, honestly"),
        True,
    ),
    ("aside", 1, _phrases("{anticlaim} | admittedly {anticlaim} | my only gripe: {anticlaim}"), False),
)


def _movie_sentence(rng: random.Random, grammar: Grammar, kind: tuple, used: set[str]) -> str:
    """Expand one sentence of the given kind and finish it with punctuation."""
    name = kind[0]
    text = tidy(expand(rng, f"{{sentence_{name}}}", grammar, used))
    if text.endswith("?"):
        return text
    return text + end_mark(rng, exclaim=0.5 if name == "exclaim" else 0.06)


def movie_review(rng: random.Random, positive: bool) -> str:
    """One review of 1-3 sentences and 12-45 words whose overall polarity is ``positive``."""
    grammar = MOVIE_GRAMMARS[positive]
    weights = [k[1] for k in MOVIE_SENTENCES]
    for _ in range(200):
        n_sentences = rng.choices((1, 2, 3), weights=(1, 4, 5))[0]
        kinds = rng.choices(MOVIE_SENTENCES, weights=weights, k=n_sentences)
        if not any(k[3] for k in kinds):
            continue
        used: set[str] = set()
        text = " ".join(_movie_sentence(rng, grammar, k, used) for k in kinds)
        text = style_case(rng, capitalize_sentences(text), p_lower=0.08, p_shout=0.03)
        if 12 <= word_count(text) <= 45:
            return text
    raise RuntimeError("could not build a movie review within the length range")


MOVIE_BASE.update({f"sentence_{name}": templates for name, _, templates, _ in MOVIE_SENTENCES})
MOVIE_GRAMMARS = {flag: polar_grammar(MOVIE_BASE, MOVIE_POLAR, positive=flag) for flag in (True, False)}


# ----------------------------------------------------------------------------------------------------------
# App reviews (Spotify-like, 1..5 stars)
# ----------------------------------------------------------------------------------------------------------

APP_FEATURES_SING = _phrases("""
    shuffle | the playlist feature | offline mode | search | my library | the lyrics feature | radio |
    the sleep timer | the equalizer | the queue | the home screen | the podcast section |
    the download button | crossfade | car mode | the widget | the lock screen player | audio quality |
    the interface | the new design | dark mode | smart shuffle | the discover page | the family plan |
    the student plan | login | syncing between devices | the connect feature | friend activity |
    the audiobooks section | autoplay | the repeat button | the like button | navigation | the search bar |
    the mini player | the app | this app | the desktop version | the tablet version | the algorithm |
    premium | the free version | the update | the latest update | the new layout | the artist radio |
    the daily mix | the release radar | the jam feature | the AI DJ | lossless audio | spatial audio |
    the car view | the sleep mode | the hi-fi option | the taste profile | the search filters |
    the smart downloads | the queue editor | the playback speed option
""")

APP_FEATURES_PLUR = _phrases("""
    the recommendations | the playlists | the daily mixes | the podcasts | the lyrics | the downloads |
    the curated playlists | the ads | the notifications | the new features | the music videos |
    the canvas videos | the suggestions | the controls | the offline downloads | the audiobooks
""")

APP_COPULA_SING = _phrases("is | is | is | has been | feels | works | seems | is honestly | is now")
APP_COPULA_PLUR = _phrases("are | are | are | have been | feel | seem | are honestly | are now")

APP_GENRES = _phrases("""
    rock | jazz | hip hop | kpop | classical | lofi | metal | country | indie | reggaeton | punk | blues |
    techno | ambient | gospel | folk | r&b | house | soul | funk | emo | afrobeats | latin pop | synthwave |
    grunge | bluegrass | drill | opera | film scores | 80s pop | 90s rock | old school rap | bossa nova |
    shoegaze | salsa | trap | dubstep | bollywood | cumbia | jpop | celtic | ska | hyperpop | chillhop |
    worship music | polka
""")

APP_MOODS = _words("""
    happy sad chill workout study sleep focus party rainy angry calm sunday romantic nostalgic energetic
    melancholy hype cozy lonely heartbroken summer winter
""")

APP_DEVICES = _phrases("""
    iphone | android phone | pixel | samsung | ipad | tablet | laptop | car | smart tv | smartwatch |
    old phone | new phone | work computer | echo speaker | chromebook | headphones | earbuds | apple watch |
    macbook | windows pc | fire tablet | galaxy watch | sonos speaker | xbox | playstation
""")

APP_ACTIVITIES = _phrases("""
    my commute | the gym | running | studying | work | long drives | cooking | cleaning the house |
    falling asleep | road trips | walking the dog | late night coding | yoga | gaming | my morning routine |
    homework | parties | painting | knitting | night shifts | marathon training | meal prep | my baby's naps |
    long flights | hiking | skateboarding
""")

APP_POS_STRONG = _phrases("""
    amazing | awesome | perfect | fantastic | excellent | brilliant | flawless | incredible | top notch |
    so good | on point | seamless | the best | spot on | super smooth | really great | outstanding |
    a lifesaver | unbeatable | addictive | a dream | my favorite app | superb | life changing | gorgeous
""")

APP_POS_MILD = _phrases("""
    fine | decent | good | pretty good | alright | good enough | nice | handy | useful | not bad | solid |
    mostly reliable | easy to use | okay most of the time | pretty smooth
""")

APP_NEG_STRONG = _phrases("""
    terrible | awful | horrible | useless | broken | a mess | garbage | unusable | a disaster | the worst |
    trash | unbearable | pathetic | infuriating | completely broken | a joke | ridiculous |
    an absolute nightmare | a scam | laughable | an embarrassment | dreadful | beyond frustrating |
    a total rip off
""")

APP_NEG_MILD = _phrases("""
    a bit clunky | kind of slow | confusing | buggy at times | annoying | cluttered | hit or miss |
    a little laggy | inconsistent | not great | frustrating | worse than before | hard to find | hidden away |
    a bit of a downgrade | less intuitive | weirdly designed | a little too busy |
    clunkier than it used to be | a bit overpriced | sluggish on my tablet | overcomplicated |
    slightly annoying | hard to use | harder to use than it should be
""")

APP_PROBLEMS = _phrases("""
    keeps crashing | crashes every time I open it | won't open at all | logs me out every day |
    stops playing when my screen locks | skips songs randomly | freezes on the loading screen |
    drains my battery in an hour | won't download anything | deletes my downloads | forgets my playlists |
    plays songs I never added | won't connect to my car | keeps pausing | shows an error every time I search |
    lags so badly it's unusable | crashes in the middle of a podcast | won't let me log in |
    restarts the song every few seconds | won't play anything offline | shows a black screen |
    keeps playing the same ten songs | unfollows artists on its own | won't show my liked songs |
    shows lyrics for the wrong song | kicks me off when my partner logs in | mutes itself every few minutes
""")

APP_MINOR_ISSUES = _phrases("""
    skips a song | freezes for a second | lags a little on older phones | takes a while to load |
    forgets where I was in a podcast | shuffles the same twenty songs |
    puts podcasts where my music should be | hides the queue | plays an ad at the worst moment |
    loses my place in an audiobook | buffers on wifi | plays a random song after my playlist ends |
    resets my equalizer | shows the wrong album art | stutters when I switch apps | shows the wrong lyrics |
    forgets my sort order | logs me out after updates
""")

APP_ADS_STRONG = _phrases("""
    way too many ads | an ad after every two songs | ads louder than the music | the same ad over and over |
    ads even in the middle of a playlist | thirty seconds of ads between every song | more ads than music
""")

APP_UPDATES = _phrases("""
    since the last update | after the latest update | since the new update | ever since the redesign |
    after this week's update | for the last month | lately | since I updated | on my {device}
""")

APP_REQUESTS = _phrases("""
    bring back the old {feature} | add a sleep timer for podcasts | let us turn off {feature} |
    fix {feature} | add a way to sort my playlists | give us a dislike button | make shuffle actually random |
    let me hide podcasts from the home screen | add a lyrics translation option | add a proper equalizer |
    let us download on sd cards | bring back the heart button | stop autoplaying songs I hate |
    add folders for playlists | let me hide songs from mixes | add a queue history |
    let us pin playlists to the top | bring back the old shuffle algorithm | add a karaoke mode |
    show the bitrate somewhere | let me block an artist completely
""")

APP_BASE: Grammar = {
    "feature_copula": copula_phrase(APP_FEATURES_SING, APP_FEATURES_PLUR, APP_COPULA_SING, APP_COPULA_PLUR),
    "feature": APP_FEATURES_SING + APP_FEATURES_PLUR,
    "genre": APP_GENRES,
    "mood": APP_MOODS,
    "device": APP_DEVICES,
    "activity": APP_ACTIVITIES,
    "pos_strong": APP_POS_STRONG,
    "pos_mild": APP_POS_MILD,
    "neg_strong": APP_NEG_STRONG,
    "neg_mild": APP_NEG_MILD,
    "problem": APP_PROBLEMS,
    "minor": APP_MINOR_ISSUES,
    "ads": APP_ADS_STRONG,
    "since": APP_UPDATES,
    "request": APP_REQUESTS,
    "years": _phrases("two | three | five | six | ten | a few | many | four"),
    "year": _words("2014 2015 2016 2017 2018 2019 2020 2021 2022"),
    "app_ref": _phrases("the app | this app | it | the app | spotify | the player | the whole thing"),
    "artist": full_name,
    "n_songs": _words("200 500 800 1,000 1,500 2,000 3,000 5,000"),
    "always": _phrases("~ | ~ | always | constantly | randomly | now | suddenly | still"),
    "sometimes": _phrases("sometimes | occasionally | now and then | once in a while | every so often"),
    "ever": _phrases("""
        ever | out there | I've ever used | on the market | hands down | of all time | in years
    """),
    "podcast": _phrases("""
        true crime | history | comedy | football | cooking | politics | science | meditation | business |
        horror stories | philosophy | parenting | fantasy football | true stories | astronomy |
        language learning | film reviews | tech news | self improvement | basketball | gardening |
        personal finance | mythology
    """),
    "where": _phrases("""
        on the train | in the car | at work | on the bus | at the gym | on my walks | in the shower |
        at night | on flights | in the kitchen | on my bike | at the office | while driving | in bed |
        on the subway
    """),
    "rival": _phrases("""
        apple music | youtube music | pandora | tidal | deezer | soundcloud | amazon music | the radio
    """),
    "song_title": lambda rng: f"{rng.choice(MOVIE_TITLE_ADJ)} {rng.choice(MOVIE_TITLE_NOUN)}",
    "support": _phrases("""
        customer support | the help center | the support chat | the community forum | the support team |
        the billing department | the refund form
    """),
    "billing": _phrases("""
        charged me twice this month | raised the price again | took my money and locked my account |
        billed me after I cancelled | won't let me cancel my subscription |
        ended my student discount without warning
    """),
}

# Sentence pools by strength of sentiment. Scores mix these; see ``app_review``.
APP_SENTENCES: dict[str, tuple[str, ...]] = {
    "pos_strong": _phrases("""
        best music app {ever} | I love this app | love love love it | {feature_copula} {pos_strong} |
        absolutely love the {feature} | perfect for {activity} | finds me new {genre} every single week |
        premium is worth every penny | never had a single problem in {years} years | everything just works |
        I can't imagine {activity} without it | my {mood} playlists are perfect |
        the {mood} mixes always match my mood | it knows my taste better than I do |
        the {genre} playlists are {pos_strong} | the sound quality is {pos_strong} | no complaints at all |
        found so many new artists through this app | seriously the best app on my {device} |
        worth it just for the {feature} | way better than {rival} |
        I've tried {rival} and nothing comes close |
        listening to {song_title} on repeat {where}, sounds {pos_strong} |
        the {podcast} podcasts are {pos_strong} | makes my {mood} days better |
        it got me through exams and a breakup | downloads work {pos_strong} {where} |
        my year-end wrapped was so accurate it was scary | thank you for the {feature} |
        the crossfade between tracks is buttery smooth | the curated jazz brunch playlist is chef's kiss |
        the podcast transcripts are a lovely touch for accessibility | syncing to my speaker is instant |
        the volume normalization saves my eardrums | hands down the slickest interface on my homescreen
    """),
    "pos_mild": _phrases("""
        {feature_copula} {pos_mild} | good for {activity} | does what I need most of the time |
        pretty good app overall | the music selection is good | I like the {feature} | mostly happy with it |
        {feature_copula} {pos_mild} for {activity} | good app for {genre} fans | works fine on my {device} |
        I enjoy the {mood} playlists | nice for discovering some {genre} | decent for {podcast} podcasts |
        {support} sorted my issue eventually | a bit better than {rival} | fine {where} |
        the new {feature} grew on me
    """),
    "mid": _phrases("""
        it's okay I guess | meh | it does the job | not great, not terrible | average at best |
        could be better, could be worse | it's fine for now | mixed feelings about the new version |
        some days it's great, some days it's not | it works, mostly | honestly it's just okay |
        nothing special but it plays music | three stars feels right | somewhere in the middle for me
    """),
    "neg_mild": _phrases("""
        {feature_copula} {neg_mild} | {sometimes} it {minor} | the last update made {feature} {neg_mild} |
        a few too many ads | it would be nice if you could {request} | I miss the old {feature} |
        {feature_copula} {neg_mild} {since} | why is it so hard to find {feature} now? |
        the free version has a lot of ads | it {sometimes} {minor} {since} | premium feels a bit pricey |
        it {sometimes} {minor} {where} | the {podcast} podcasts keep showing up in my music feed |
        {support} took a week to answer | the price went up again | I keep thinking about trying {rival} |
        the tablet layout wastes half the screen | the notification spam about concerts is tiresome |
        the algorithm pigeonholes me into one genre | the desktop client hogs memory on my laptop |
        the artist pages are cluttered with merch banners
    """),
    "neg_strong": _phrases("""
        {app_ref} {always} {problem} {since} | {feature_copula} {neg_strong} | {ads} | worst update {ever} |
        uninstalling | cancelled my premium | switching to another app | deleted it |
        I pay for premium and it still {problem} | fix your app | what happened to this app? |
        why did you ruin {feature}? | zero stars if I could | {feature_copula} {neg_strong} {since} |
        this used to be my favorite app, now it's {neg_strong} | absolutely {neg_strong} |
        can't even play my own {genre} playlist anymore | {app_ref} {problem}, every single time |
        {app_ref} {billing} | {support} was useless | I'm moving my playlists to {rival} |
        {app_ref} {problem} {where} | lost my {mood} playlist with {n_songs} songs on it |
        I literally can't listen to {song_title} anymore | greedy corporate nonsense, nothing else |
        the bluetooth handoff stutters constantly and drives me insane | refund denied, support ghosted me |
        an obnoxious pop-up interrupts every single session | my carefully sorted library got scrambled
    """),
    "usage": _phrases("""
        I use it every day for {activity} | been using it for {years} years | been premium since {year} |
        I mostly listen to {genre} | mostly use it for podcasts | I use it on my {device} |
        I listen to {artist} and a lot of {genre} | I have a {mood} playlist for everything |
        my whole family is on the family plan | I use it for {activity} and {activity} |
        I mostly play {podcast} podcasts {where} | I came over from {rival} last year |
        I listen {where} mostly | I have like {n_songs} liked songs |
        my kids use it for {genre} and I use it for {podcast} podcasts
    """),
    "request": _phrases("""
        please {request} | would love it if you could {request} | devs, please {request} | pls {request}
    """),
}

APP_BASE.update({f"sentence_{kind}": pool for kind, pool in APP_SENTENCES.items()})

APP_SCORE_SHARES = {5: 0.33, 1: 0.25, 4: 0.16, 3: 0.13, 2: 0.13}  # long-tailed like real app stores
APP_SCORE_MEAN = {1: -1.0, 2: -0.45, 3: 0.0, 4: 0.45, 5: 1.0}  # latent sentiment of each rating
APP_LATENT_SD = 0.25  # reviewer-to-reviewer spread of that latent sentiment; makes 2..4 overlap


def _app_sentence_kind(rng: random.Random, v: float) -> str:
    """Pick the sentence pool for one sentence of a review with latent sentiment ``v`` (about -1.5..1.5)."""
    if rng.random() < 0.16:
        return rng.choice(("usage", "usage", "request"))
    if rng.random() < 0.45 * math.exp(-((v / 0.3) ** 2)):
        return "mid"
    positive = rng.random() < min(0.96, max(0.04, 0.5 + 0.5 * v))
    strong = rng.random() < abs(v) and (v > 0) == positive
    return ("pos_" if positive else "neg_") + ("strong" if strong else "mild")


def _app_emoji(rng: random.Random, v: float) -> str:
    """An occasional emoji tail matching the mood, as real app reviews have."""
    if rng.random() > 0.05:
        return ""
    return " " + rng.choice(
        ("\U0001f60d", "\U0001f3b6", "\u2764\ufe0f", "\U0001f525")
        if v > 0
        else ("\U0001f621", "\U0001f44e", "\U0001f612")
    )


def app_review(rng: random.Random, score: int) -> str:
    """One app review of 8-35 words for the given 1..5 star ``score``."""
    v = rng.gauss(APP_SCORE_MEAN[score], APP_LATENT_SD)
    for _ in range(200):
        n_sentences = rng.choices((1, 2, 3, 4), weights=(3, 5, 4, 2))[0]
        kinds = [_app_sentence_kind(rng, v) for _ in range(n_sentences)]
        if all(k in ("usage", "request") for k in kinds):
            continue
        parts: list[str] = []
        used: set[str] = set()
        for kind in kinds:
            sentence = tidy(expand(rng, f"{{sentence_{kind}}}", APP_BASE, used))
            if not sentence.endswith("?"):
                sentence += end_mark(rng, exclaim=0.35 if kind.endswith("strong") else 0.05)
            parts.append(sentence)
        text = capitalize_sentences(" ".join(parts))
        if rng.random() < 0.15:  # many app reviews skip the final full stop
            text = text.rstrip(".")
        text = style_case(rng, text, p_lower=0.22, p_shout=0.06) + _app_emoji(rng, v)
        if 8 <= word_count(text) <= 35:
            return text
    raise RuntimeError("could not build an app review within the length range")


# ----------------------------------------------------------------------------------------------------------
# News headlines (HuffPost-like, five topics)
# ----------------------------------------------------------------------------------------------------------

NEWS_CATEGORIES = ("WELLNESS", "FOOD & DRINK", "POLITICS", "ENTERTAINMENT", "SPORTS")

NEWS_BASE: Grammar = {
    "n": small_number,
    "person": full_name,
    "first": FIRST_NAMES,
    "city": CITIES,
    "pct": lambda rng: str(rng.randint(12, 88)),
    "score": lambda rng: f"{rng.randint(1, 7)}-{rng.randint(0, 4)}",
    "year": _words("2019 2020 2021 2022 2023 2024 2025"),
    "season": _words("Summer Fall Winter Spring Weekend Holiday"),
    # wellness
    "practice": _phrases("""
        yoga | meditation | journaling | breathwork | cold showers | intermittent fasting | walking meetings |
        therapy | mindfulness | a digital detox | napping | strength training | stretching | gratitude lists |
        forest bathing | tai chi | pilates | a sleep schedule | sound baths | dry January | running |
        aqua aerobics | barre classes | sauna sessions | weighted blankets | gentle stretching |
        a gratitude journal | therapy apps | dance breaks | bird watching | hiking alone
    """),
    "practice_ing": _phrases("""
        talking to yourself | crying at work | sleeping in | skipping breakfast | working out at night |
        taking cold showers | doomscrolling before bed | meditating for five minutes |
        journaling every morning | walking 10,000 steps | going to therapy | napping after lunch |
        standing at your desk | saying no more often | eating dinner alone | unfollowing everyone |
        taking a mental health day | screaming into a pillow | hugging a tree
    """),
    "goal": _phrases("""
        better sleep | less stress | a calmer mind | lower back pain | more energy | a healthier heart |
        beating burnout | managing anxiety | a stronger core | better posture | fewer headaches |
        a longer life | a better mood | beating insomnia | easing joint pain | mental clarity |
        quieting your inner critic | healthier aging | stronger bones | a quieter mind | better focus |
        a steadier mood | fewer sick days | deeper sleep | lower cholesterol | weight loss | losing weight
    """),
    "body": _phrases(
        "brain | heart | gut | skin | body | back | liver | lungs | muscles | immune system | hormones"
    ),
    "condition": _phrases("""
        anxiety | depression | burnout | insomnia | loneliness | chronic pain | migraines |
        seasonal depression | panic attacks | grief | menopause symptoms | high blood pressure | brain fog |
        stress | ADHD | OCD | PTSD | eating disorders | social anxiety | seasonal allergies | long COVID |
        tinnitus | perfectionism | impostor syndrome | decision fatigue
    """),
    "wellness_thing": _phrases("""
        Yoga Poses | Stretches | Breathing Exercises | Sleep Tips | Habits | Self-Care Ideas |
        Mindfulness Tricks | Morning Rituals | Therapist Tips | Ways To Unwind
    """),
    "pro": _phrases("""
        Therapists | Doctors | Sleep Experts | Psychologists | Cardiologists | Dermatologists | Researchers |
        Physical Therapists
    """),
    # food
    "dish": _phrases("""
        lasagna | banana bread | sourdough | tacos | ramen | pad thai | chili | meatballs | mac and cheese |
        roast chicken | chocolate chip cookies | apple pie | cheesecake | pancakes | fried rice | gumbo |
        shakshuka | risotto | dumplings | brisket | paella | carbonara | pot roast | pho | biscuits |
        guacamole | cinnamon rolls | pumpkin pie | grilled cheese | lentil soup | tiramisu | empanadas |
        focaccia | curry | jambalaya | bibimbap | moussaka | pierogi | falafel | ceviche | enchiladas |
        birria | katsu curry | cornbread | clam chowder | baklava | key lime pie | pavlova | samosas |
        jollof rice | pozole | ratatouille | gnocchi | scones
    """),
    "dish_plural": _phrases("""
        Sheet Pan Dinners | Slow Cooker Recipes | Salads | Soups | Casseroles | Pasta Dishes | Cookies |
        Cocktails | Mocktails | Brunch Recipes | Grilling Recipes | Sandwiches | Desserts | Smoothies |
        Snacks | Side Dishes | Weeknight Dinners | Pies | Appetizers | Breakfast Ideas | Vegan Recipes |
        Dips | Tray Bakes | Air Fryer Recipes | Hand Pies | Noodle Bowls | Potluck Dishes | Freezer Meals |
        Picnic Recipes | Cheese Boards
    """),
    "drink": _phrases("""
        Wine | Coffee | Cold Brew | Craft Beer | Tequila | Kombucha | Matcha | Bourbon | Rosé |
        Hot Chocolate | Sparkling Water | Espresso Martinis | Mezcal | Cider | Oat Milk | Negronis | Sake |
        Margaritas | Chai | Prosecco | Natural Wine | Iced Tea | Lemonade | Sangria | Gin
    """),
    "ingredient": _phrases("""
        garlic | butter | olive oil | avocado | cilantro | tahini | miso | cauliflower | chickpeas | eggs |
        lemons | cast iron | sourdough starter | brown sugar | anchovies | kale | mushrooms | tofu | saffron |
        fennel | gochujang | ricotta | pomegranate | sumac | buttermilk | zucchini | capers | parsnips |
        rhubarb | harissa | shallots
    """),
    "cuisine": _words("""
        Italian Mexican Thai Korean Ethiopian Greek Indian Japanese Lebanese Peruvian Vietnamese Cajun
    """),
    "food_pro": _phrases("""
        Chefs | Bakers | Bartenders | Sommeliers | Grandmas | Line Cooks | Food Editors | Pitmasters
    """),
    # politics
    "office": _phrases("""
        Governor | Senate | Congress | Mayor | President | Attorney General | City Council | the House
    """),
    "pol_title": _phrases("Sen. | Rep. | Gov. | Mayor | Speaker | Secretary | Senator | Governor"),
    "party": _words("Democrats Republicans GOP Progressives Conservatives Moderates Independents"),
    "bill": _phrases("""
        voting rights | immigration | gun control | climate | infrastructure | tax | student debt | abortion |
        border security | minimum wage | police reform | election security | farm | defense spending |
        housing | health care | campaign finance | privacy | trade | child care | opioid | broadband |
        veterans | pension | water rights | cannabis | Social Security | prescription drug | transit |
        redistricting
    """),
    "pol_verb": _phrases("""
        Passes | Blocks | Rejects | Debates | Stalls On | Advances | Kills | Revives | Votes Down
    """),
    "pol_event": _phrases("""
        Tuesday's Primary | The First Debate | The State Of The Union | The Midterms | The Runoff |
        Super Tuesday | The Town Hall | The Budget Showdown | The Confirmation Hearing |
        The Special Election | The Caucus | The Recount | The Impeachment Vote | The Senate Hearing |
        The Shutdown Deadline | The Convention | The Leaked Memo
    """),
    "pol_body": _phrases("""
        Senate | House | Supreme Court | White House | State Legislature | Congress | Appeals Court |
        Election Board
    """),
    "state": _words("""
        Ohio Georgia Arizona Texas Florida Michigan Wisconsin Nevada Pennsylvania Iowa Virginia Maine Montana
        Alabama Alaska Colorado Kansas Kentucky Louisiana Minnesota Missouri Nebraska Oregon Utah Vermont
    """),
    # entertainment
    "title": lambda rng: f"'{rng.choice(MOVIE_TITLE_ADJ)} {rng.choice(MOVIE_TITLE_NOUN)}'",
    "medium": _phrases("""
        Movies | TV Shows | Albums | Songs | Documentaries | Podcasts | Sitcoms | Horror Films |
        Music Videos | Comedy Specials | Thrillers | Rom-Coms | Soundtracks | K-Dramas | Limited Series |
        Anime | Superhero Movies | Concert Films
    """),
    "award": _phrases("""
        Oscar | Emmy | Grammy | Golden Globe | Tony | BAFTA | Billboard Music Awards | VMA | SAG Awards
    """),
    "ent_role": _phrases("""
        Singer | Actress | Actor | Rapper | Pop Star | Comedian | Late-Night Host | Director | Reality Star |
        Country Star
    """),
    "ent_work": _phrases("""
        Surprise Album | New Single | Memoir | Holiday Special | World Tour | Netflix Series | Sitcom Reboot |
        Debut Film | Broadway Show | Music Video | Podcast | Comedy Special | Makeup Line | Sequel | Biopic |
        Animated Film | Romance Novel | Cooking Show | Late-Night Show | Documentary | Christmas Album |
        Perfume Line
    """),
    # sports
    "team": lambda rng: f"{rng.choice(CITIES)} {rng.choice(SPORTS_MASCOTS)}",
    "sport": _words("""
        Soccer Basketball Tennis Baseball Football Hockey Golf Boxing Rugby Volleyball Cricket Lacrosse
        Cycling Swimming Skiing Wrestling Badminton Sailing Surfing Skateboarding Fencing
    """),
    "league": _words("NBA NFL MLB NHL WNBA NCAA FIFA MLS UFC NWSL"),
    "trophy": _phrases("""
        Title | Championship | Cup | Super Bowl | World Series | Stanley Cup | Pennant | Finals | Grand Slam |
        Gold Medal
    """),
    "position": _phrases("""
        Quarterback | Striker | Goalie | Point Guard | Pitcher | Midfielder | Forward | Shortstop |
        Linebacker | Coach | Captain | Rookie | Goalkeeper | Center | Tight End | Closer | Defender | Winger |
        Setter | Catcher
    """),
    "injury": _phrases("""
        Torn ACL | Broken Wrist | Hamstring Strain | Concussion | Ankle Sprain | Shoulder Injury |
        Back Spasms | Fractured Foot | Torn Rotator Cuff | Knee Surgery | Achilles Tear | Groin Strain |
        Elbow Injury
    """),
    "match": _phrases("""
        Match | Game | Final | Semifinal | Derby | Playoff Game | Rematch | Opener | Showdown
    """),
}

SPORTS_MASCOTS = _words("""
    Hawks Bears Comets Rangers Pilots Foxes Wolves Tigers Sharks Royals Kings Storm Lynx Owls Rockets Giants
    Mariners Pioneers Titans Falcons Bulldogs Jaguars Stallions Vipers Blaze Spartans Cougars Herons Ravens
    Otters Miners Dragons Hornets Knights Mustangs Panthers Eagles Lions Thunder Breakers Buffaloes Cardinals
    Mavericks Outlaws Sentinels Voyagers Wildcats Gulls Bison Condors Rattlers Mammoths
""")

NEWS_TEMPLATES: dict[str, tuple[str, ...]] = {
    "WELLNESS": _phrases("""
        {n} {wellness_thing} For {goal} | Why {practice} Might Be The Key To {goal} |
        What Happens To Your {body} When You Try {practice} | {practice_ing}: Crazy Or Crazy Helpful? |
        {practice_ing}: Good For You Or Just Hype? | The Surprising Link Between {condition} And Your {body} |
        {n} Signs You're Dealing With {condition} | I Tried {practice} For {n} Days. Here's What Happened |
        {pro} Say This Is The Best Way To Cope With {condition} | How To Talk To A Friend About {condition} |
        Study Finds {practice} Can Help With {condition} | Is {practice_ing} Bad For Your {body}? |
        The Simple Habit That Helped Me Beat {condition} |
        {n} Myths About {condition} {pro} Wish You'd Stop Believing |
        What {pro} Want You To Know About {condition} | {n} Ways To Protect Your {body} This {season} |
        Why You Can't Sleep, According To {pro} | A {n}-Minute Morning Routine For {goal} |
        How {practice} Changed My Relationship With {condition} |
        {first} Opens Up About Living With {condition} | Why Everyone Is Suddenly Talking About {practice} |
        The Case For Doing Absolutely Nothing This {season} | {n} Gentle Ways To Reset Your Nervous System |
        Your {body} Will Thank You For These {n} Tiny Changes |
        What Loneliness Does To Your {body}, According To Science |
        {first}'s Journey From {condition} To Marathon Finish Lines |
        The Quiet Benefits Of Walking Without Headphones |
        How To Set Boundaries With Family During The Holidays |
        Can A Weighted Blanket Really Ease {condition}? |
        Meet The Nurses Rethinking How Hospitals Handle {condition} |
        'I Felt Invisible': {first} On Postpartum Depression |
        Dermatologists Explain Why Your Skin Freaks Out In Winter |
        The Best Stretches For People Who Sit All Day | Is Your Smartwatch Making You More Anxious? |
        {n} Affirmations That Don't Feel Cheesy | Hydration Myths Debunked By A Kidney Specialist
    """),
    "FOOD & DRINK": _phrases("""
        {n} {dish_plural} To Make This {season} | The Only {dish} Recipe You'll Ever Need |
        How To Make {dish} Like A Pro | {n} {drink} Pairings For Your Next Dinner Party |
        We Tried {n} Brands Of {dish} So You Don't Have To |
        The Best {dish} In {city}, According To {food_pro} |
        Why Your {dish} Isn't Working, And How To Fix It | {n} Ways To Use Up Leftover {ingredient} |
        {food_pro} Share Their Secret To Perfect {dish} | Is {drink} Actually Worth The Hype? |
        This {n}-Ingredient {dish} Is Taking Over The Internet |
        The {cuisine} {dish} Recipe Our Editors Can't Stop Making |
        {n} Easy {cuisine} {dish_plural} For Busy Weeknights | Stop Storing Your {ingredient} In The Fridge |
        {ingredient}: The Secret Ingredient For Better {dish} | {n} Wines Under $20 That Taste Expensive |
        Grandma's {dish}: A Recipe Worth Fighting Over | The Great {dish} Debate: Butter Or Oil? |
        {n} {drink} Cocktails For {season} Parties | Inside The {city} Bakery With A Three-Hour Line |
        {n} Pantry Staples Every Home Cook Should Have |
        The Trick To Crispier {dish}, According To {food_pro} |
        Our Test Kitchen Ranked {n} Store-Bought {dish_plural} |
        Why {cuisine} {dish} Deserves A Spot On Your Table |
        The {city} Diner Serving The Same {dish} Since 1952 | Frozen {dish}: Shortcut Or Sin? |
        Meet The Farmer Growing Heirloom {ingredient} For Top Restaurants |
        How To Season A Cast Iron Skillet The Right Way | {n} Picnic-Ready {dish_plural} That Travel Well |
        The Vending Machine Snack {food_pro} Secretly Love |
        'It Tastes Like Childhood': Readers Share Their Favorite {dish} |
        The Humble Potato Salad Gets A Glow-Up | Sommeliers Reveal Which Wines Pair With Takeout |
        This Viral Cucumber Salad Is Worth Every Crunch | {n} Thanksgiving Leftover Hacks That Actually Work |
        The Surprising History Of The Fortune Cookie
    """),
    "POLITICS": _phrases("""
        Senate {pol_verb} {bill} Bill | {pol_title} {person} Slams {party} Over {bill} Plan |
        {party} Lawmakers Push Back On {bill} Deal | {n} Takeaways From {pol_event} |
        Poll: {pct} Percent Of Voters Back {bill} Reform | Supreme Court To Hear Major {bill} Case |
        {person} Announces Run For {office} In {state} | Why The {state} Senate Race Could Decide Congress |
        House Committee Subpoenas {pol_title} {person} | {state} Governor Signs Sweeping {bill} Law |
        White House Responds To Growing {bill} Backlash | {pol_body} Blocks {state}'s {bill} Rule |
        {party} Face Tough Questions After {pol_event} | What The {bill} Vote Means For {state} Voters |
        {pol_title} {person} Won't Rule Out {office} Bid | Filibuster Fight Stalls {bill} Package |
        {state} Voters Head To The Polls In {pol_event} | {n} Senators Break With Party On {bill} |
        Judge Strikes Down {state} {bill} Law | Is The {bill} Deal Dead? Here's What We Know |
        Inside The Backroom Deal That Saved The {bill} Bill |
        {state} Lawmakers Override Veto On {bill} Measure | Treasury Secretary Warns Of Debt Ceiling Fallout |
        Campaign Ads Flood {state} Airwaves Ahead Of Runoff |
        Whistleblower Complaint Rocks {state} Governor's Office |
        {pol_title} {person} Concedes Tight Race In {state} |
        Ambassador Recalled As Diplomatic Spat Escalates |
        Census Fight Could Reshape {state}'s Congressional Map |
        Inspector General Report Faults Agency Over {bill} Rollout |
        Why Young Voters Are Souring On Both Parties |
        'We Will Not Back Down': {party} Vow To Fight {bill} Ruling |
        Attorney General Sues Over Gerrymandered Districts | Mayor {person} Faces Recall Petition In {city} |
        Lobbyists Quietly Rewrite {bill} Amendment | Veterans Rally At Capitol For Burn Pit Benefits |
        Electoral College Reform Gains Bipartisan Support
    """),
    "ENTERTAINMENT": _phrases("""
        {ent_role} {person} Drops {ent_work} {title} | {title} Cast Reunites For {year} Anniversary Special |
        The {n} Best {medium} Of {year} | Watch The First Trailer For {title} |
        {person} Opens Up About Fame In Revealing New Interview | {title} Season {n} Premiere Date Announced |
        {ent_role} {person} Shuts Down Breakup Rumors | {award} Nominations: Biggest Snubs And Surprises |
        {person}'s Red Carpet Look Has Everyone Talking | {title} Cast Handles Awkward Interview Like Pros |
        {title} Breaks Box Office Records In Opening Weekend | {person} Joins Cast Of {title} Sequel |
        {ent_role} {person} Announces {ent_work} And {city} Tour Dates |
        Everything We Know About The {title} Finale | {n} Celebrities Who Quit Social Media This Year |
        {person} Wins Best Actress At The {award}s | {title} Is The Most Streamed Show Of The Week |
        Fans Are Losing It Over {person}'s Album Cover | {ent_role} {person} Teases {title} Reboot |
        Inside The Wildest Moments From The {award}s |
        {person} Reveals The Audition That Almost Ended A Career |
        The {n} Most Rewatchable Episodes Of {title} | Streaming Giant Cancels {title} After One Season |
        {ent_role} {person} Lands Hollywood Walk Of Fame Star |
        The Soundtrack Of {title} Is Climbing The Charts | Critics Rave About {person}'s Broadway Debut |
        {title} Director Explains That Shocking Cliffhanger |
        {ent_role} {person} And {person} Spark Romance Rumors |
        Tabloid Settles Lawsuit With {ent_role} {person} | Inside The Costume Department Of {title} |
        'I Was Terrified': {person} On Filming {title} | Paparazzi Photos Spark Engagement Speculation |
        Beloved Sitcom Star {person} Dies At {pct} |
        Festival Lineup Includes Surprise Reunion Of Nineties Boy Band |
        Screenwriters Strike Could Delay Fall Premieres | Animated Musical Tops Weekend Box Office Again
    """),
    "SPORTS": _phrases("""
        {team} Beat {team} {score} To Clinch {trophy} | {person} Scores {n} As {team} Roll Past Rivals |
        {team} Fire Coach After {n}-Game Losing Streak | {league} Playoffs: {n} Things We Learned This Week |
        {position} {person} Out For Season With {injury} | {league} Suspends {person} For {n} Games |
        Can The {team} Finally Win The {trophy}? | {person} Breaks Franchise Scoring Record In {team} Win |
        Watch {person}'s Stunning Goal Against The {team} | Referee Controversy Overshadows {team} {match} |
        {team} Trade Star {position} To {team} | {person} Wins {trophy} In {sport} Thriller |
        {position} {person} Signs Record Contract With {team} | {n} Takeaways From The {team} {match} |
        {team} Rally From {n} Down To Stun {team} | Is This The Year The {team} Win It All? |
        {sport} Star {person} Announces Retirement At {pct} |
        {team} Coach Blasts Officials After {score} Loss | Rookie {position} Leads {team} To Overtime Win |
        {person} Advances To {sport} Semifinal In Straight Sets |
        {team} Clinch Playoff Berth With Walk-Off Homer |
        Olympic Sprinter {person} Sets World Record In Heats |
        {person} Completes Comeback From {injury} With Hat Trick |
        Commissioner Defends Controversial Replay Rule |
        Underdog {team} Stun Defending Champions In Penalty Shootout |
        Marathoner {person} Wins {city} Race In Record Time |
        {team} Unveil New Stadium Design Amid Fan Backlash |
        Transfer Window: {team} Agree Deal For {position} {person} | Draft Day Winners And Losers |
        {person} Becomes Youngest Head Coach In {league} History |
        'We Just Kept Believing': {team} Captain On Miracle Run | Goaltender Stops {n} Shots In Shutout |
        Cyclist {person} Crashes Out Of Mountain Stage | Golfer {person} Sinks Eagle To Force Playoff |
        Tennis Phenom {person} Upsets Top Seed At {city} Open | Umpire Ejects Manager After Heated Argument
    """),
}

# Genuinely two-topic headlines; the label is whichever of the pair the row was assigned.
NEWS_AMBIGUOUS: dict[tuple[str, str], tuple[str, ...]] = {
    ("SPORTS", "FOOD & DRINK"): _phrases("""
        What {position} {person} Eats Before A Big {match} |
        {person}'s Pregame Breakfast Is A {n}-Egg Omelet | {team} Star Opens {cuisine} Restaurant In {city} |
        The {dish} Recipe That Fuels {person}'s {sport} Season
    """),
    ("ENTERTAINMENT", "POLITICS"): _phrases("""
        {ent_role} {person} Launches Campaign For {office} |
        {person} Slams Senator Over {bill} At Awards Show |
        Late-Night Hosts Roast {person}'s Debate Performance |
        {ent_role} {person} Endorses {state} Senate Hopeful
    """),
    ("WELLNESS", "FOOD & DRINK"): _phrases("""
        Top Healthy Recipes For {goal} | {n} Gut-Friendly {dish_plural} Dietitians Love |
        Is {drink} Good For Your {body}? | {n} Anti-Inflammatory {dish_plural} For {goal}
    """),
    ("WELLNESS", "SPORTS"): _phrases("""
        How Marathon Training Helped {person} Beat {condition} |
        {sport} Star {person} Opens Up About {condition} |
        The Recovery Routine That Keeps {person} In The {league} |
        {position} {person} On Therapy, {condition} And Comebacks
    """),
    ("ENTERTAINMENT", "FOOD & DRINK"): _phrases("""
        {ent_role} {person}'s New Cooking Show Is Pure Chaos |
        {person} Shares The {dish} Recipe From The Set Of {title} |
        {ent_role} {person} Launches Celebrity {drink} Brand |
        The {cuisine} Spot Where {person} Filmed {title}
    """),
    ("POLITICS", "WELLNESS"): _phrases("""
        Senate Bill Would Expand Access To {condition} Care |
        {pol_title} {person} Pushes Plan To Tackle {condition} |
        {state} Lawmakers Target {condition} With New Funding |
        {n} States Vote On Therapy Coverage For {condition}
    """),
    ("SPORTS", "POLITICS"): _phrases("""
        {person} Testifies Before Congress On {league} Concussions | {city} Voters Reject Stadium Tax |
        {position} {person} Urges Fans To Register To Vote | {state} Governor Signs {sport} Betting Bill
    """),
    ("ENTERTAINMENT", "SPORTS"): _phrases("""
        {ent_role} {person} Courtside As {team} Stun Rivals | {trophy} Halftime Show Headliner Announced |
        {person} Cast As {sport} Legend In {title} | {ent_role} {person} Sings Anthem Before {team} {match}
    """),
}
NEWS_AMBIGUOUS_SHARE = 0.08  # fraction of headlines drawn from a two-topic template
NEWS_SENTENCE_CASE = 0.08  # fraction written in sentence case rather than title case


def news_headline(rng: random.Random, category: str) -> str:
    """One 5-14 word headline for ``category`` (sometimes from a template shared with a second topic)."""
    pairs = [p for p in NEWS_AMBIGUOUS if category in p]
    for _ in range(200):
        if rng.random() < NEWS_AMBIGUOUS_SHARE:
            templates = NEWS_AMBIGUOUS[rng.choice(pairs)]
        else:
            templates = NEWS_TEMPLATES[category]
        text = tidy(expand(rng, rng.choice(templates), NEWS_BASE))
        sentence_case = rng.random() < NEWS_SENTENCE_CASE
        text = text[0].upper() + text[1:].lower() if sentence_case else title_case(text)
        if 5 <= word_count(text) <= 14:
            return text
    raise RuntimeError("could not build a headline within the length range")


# ----------------------------------------------------------------------------------------------------------
# Corpus assembly: balanced labels, unique texts, then injected noise, duplicates and empties
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CorpusSpec:
    """How one demo corpus is built."""

    name: str  # short name; also seeds the corpus's own random stream
    filename: str  # CSV file name inside the output folder
    text_column: str  # header of the text column
    label_column: str  # header of the label column
    labels: tuple[str, ...]  # the label set, in output order for class counts
    shares: tuple[float, ...]  # target share of each label among the generated rows
    n_rows: int  # total rows written, duplicates and empties included
    make_text: Callable[[random.Random, str], str]  # (rng, label) -> raw text
    label_noise: float = 0.03  # fraction of generated rows whose label is replaced by a different one
    duplicate_share: float = 0.01  # fraction of n_rows that are exact copies of other rows
    n_empty: int = 4  # rows whose text is empty or whitespace only


@dataclass
class CorpusStats:
    """What the generator did, printed and documented in the README."""

    name: str
    n_rows: int
    class_counts: dict[str, int]
    n_flipped: int
    n_duplicates: int
    n_empty: int


def allocate(n: int, shares: Sequence[float]) -> list[int]:
    """Split ``n`` into integer counts proportional to ``shares`` (largest remainder, ties by position)."""
    raw = [n * s / sum(shares) for s in shares]
    counts = [int(r) for r in raw]
    order = sorted(range(len(raw)), key=lambda i: (-(raw[i] - counts[i]), i))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    return counts


def unique_texts(rng: random.Random, spec: CorpusSpec, labels: list[str]) -> list[tuple[str, str]]:
    """One text per label, re-drawing any text whose lower-cased form was already produced."""
    seen: set[str] = set()
    rows = []
    for label in labels:
        for _ in range(1000):
            text = spec.make_text(rng, label)
            key = text.lower()
            if key not in seen:
                seen.add(key)
                rows.append((text, label))
                break
        else:
            raise RuntimeError(f"{spec.name}: could not draw a new unique text for label {label!r}")
    return rows


def build_corpus(spec: CorpusSpec, seed: int) -> tuple[list[tuple[str, str]], CorpusStats]:
    """Generate the rows of one corpus and the statistics of what was injected."""
    rng = random.Random(f"layershift-demo:{spec.name}:{seed}")
    n_dup = round(spec.duplicate_share * spec.n_rows)
    n_base = spec.n_rows - n_dup - spec.n_empty
    labels = [
        lab for lab, c in zip(spec.labels, allocate(n_base, spec.shares), strict=True) for _ in range(c)
    ]
    rng.shuffle(labels)
    rows = unique_texts(rng, spec, labels)

    flipped = sorted(rng.sample(range(n_base), round(spec.label_noise * n_base)))
    for i in flipped:
        text, label = rows[i]
        rows[i] = (text, rng.choice([lab for lab in spec.labels if lab != label]))

    duplicates = [rows[i] for i in sorted(rng.sample(range(n_base), n_dup))]
    empties = [(rng.choice(("", "", " ", "   ", "\t")), rng.choice(spec.labels)) for _ in range(spec.n_empty)]
    rows = rows + duplicates + empties
    rng.shuffle(rows)

    counts = {lab: sum(1 for _, row_label in rows if row_label == lab) for lab in spec.labels}
    stats = CorpusStats(spec.name, len(rows), counts, len(flipped), n_dup, spec.n_empty)
    return rows, stats


def csv_text(header: Sequence[str], rows: Sequence[tuple[str, str]]) -> str:
    """Render rows as CSV with ``\\n`` line endings and minimal quoting."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buffer.getvalue()


def write_atomic(path: Path, text: str) -> None:
    """Write UTF-8 ``text`` to a temporary file beside ``path`` and rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; these are ordinary shared data files
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


CORPORA: tuple[CorpusSpec, ...] = (
    CorpusSpec(
        name="movies",
        filename="movie_reviews.csv",
        text_column="review",
        label_column="sentiment",
        labels=("positive", "negative"),
        shares=(0.5, 0.5),
        n_rows=1200,
        make_text=lambda rng, label: movie_review(rng, positive=label == "positive"),
        n_empty=4,
    ),
    CorpusSpec(
        name="apps",
        filename="app_reviews.csv",
        text_column="content",
        label_column="score",
        labels=tuple(str(s) for s in APP_SCORE_SHARES),
        shares=tuple(APP_SCORE_SHARES.values()),
        n_rows=1500,
        make_text=lambda rng, label: app_review(rng, int(label)),
        n_empty=5,
    ),
    CorpusSpec(
        name="news",
        filename="news_headlines.csv",
        text_column="headline",
        label_column="category",
        labels=NEWS_CATEGORIES,
        shares=(0.2,) * len(NEWS_CATEGORIES),
        n_rows=1200,
        make_text=news_headline,
        n_empty=4,
    ),
)


def generate_all(seed: int = DEFAULT_SEED, out_dir: Path = DEFAULT_OUT) -> list[CorpusStats]:
    """Write every demo corpus into ``out_dir`` and return what was generated."""
    all_stats = []
    for spec in CORPORA:
        rows, stats = build_corpus(spec, seed)
        write_atomic(Path(out_dir) / spec.filename, csv_text((spec.text_column, spec.label_column), rows))
        all_stats.append(stats)
    return all_stats


def describe(stats: CorpusStats) -> str:
    """One human-readable summary line for a generated corpus."""
    counts = ", ".join(f"{k}={v}" for k, v in stats.class_counts.items())
    return (
        f"{stats.name}: {stats.n_rows} rows ({counts}); label noise {stats.n_flipped} rows, "
        f"{stats.n_duplicates} exact duplicate rows, {stats.n_empty} empty/whitespace texts"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default: this folder)")
    args = parser.parse_args(argv)
    for stats in generate_all(args.seed, args.out):
        print(describe(stats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
