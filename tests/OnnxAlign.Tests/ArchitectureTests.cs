using System.Text.RegularExpressions;
using OnnxAlign.Core;

namespace OnnxAlign.Tests;

/// <summary>
/// The library's layers (DESIGN §6): each folder names only the layers before it, the graph between namespaces has
/// no cycle, and no library message names a command-line flag (the CLI maps an exception's parameter to its flag).
/// Read from the source, so that a reference in a method body counts as much as one in a signature.
/// </summary>
public sealed class ArchitectureTests
{
    /// <summary>DESIGN §6's table: the layers in order, and for the two with a narrower row, what they may use.</summary>
    private static readonly string[] LayerOrder =
        ["Core", "IO", "Model", "Rewards", "Guidance", "Sampling", "Estimation", "Alignment", "Evaluation", "Reporting", "Jobs"];

    private static readonly Dictionary<string, string[]> NarrowerRows = new()
    {
        ["Guidance"] = ["Core", "IO", "Model", "Rewards"],
        ["Sampling"] = ["Core", "IO", "Model"],
    };

    private static string LibraryRoot => Path.Combine(TestSupport.RepositoryRoot, "src", "OnnxAlign");

    private sealed record SourceFile(string Path, string Namespace, string Code, string Text);

    private static readonly Lazy<SourceFile[]> Sources = new(() => Directory
        .EnumerateFiles(LibraryRoot, "*.cs", SearchOption.AllDirectories)
        .Where(p => !p.Contains($"{Path.DirectorySeparatorChar}obj{Path.DirectorySeparatorChar}") &&
                    !p.Contains($"{Path.DirectorySeparatorChar}bin{Path.DirectorySeparatorChar}"))
        .Select(p =>
        {
            string text = File.ReadAllText(p);
            var ns = Regex.Match(text, @"^namespace\s+([\w.]+)\s*;", RegexOptions.Multiline);
            Assert.True(ns.Success, $"{p}: no file-scoped namespace");
            return new SourceFile(p, ns.Groups[1].Value, StripCommentsAndStrings(text), text);
        })
        .ToArray());

    private static string StripCommentsAndStrings(string text)
    {
        text = Regex.Replace(text, @"//[^\n]*", "");
        text = Regex.Replace(text, @"/\*.*?\*/", "", RegexOptions.Singleline);
        return Regex.Replace(text, @"\$?@?""(?:\\.|[^""\\])*""", "\"\"");
    }

    /// <summary>The layer of a namespace: its first segment after OnnxAlign (Alignment.Prox is part of Alignment).</summary>
    private static string LayerOf(string ns)
    {
        string[] parts = ns.Split('.');
        Assert.True(parts.Length >= 2 && parts[0] == "OnnxAlign", $"namespace {ns} is outside OnnxAlign.<Layer>");
        Assert.Contains(parts[1], LayerOrder);
        return parts[1];
    }

    /// <summary>Namespace → the namespaces its files name, with one example (file: type) per edge.</summary>
    private static Dictionary<string, Dictionary<string, string>> NamespaceGraph()
    {
        // Top-level types only (column 0 under file-scoped namespaces): nested types are reached through their parent.
        var declared = new Dictionary<string, string>();
        foreach (var file in Sources.Value)
            foreach (Match m in Regex.Matches(file.Code,
                         @"^(?:public|internal)\s+(?:(?:sealed|static|abstract|readonly|partial|ref)\s+)*(?:class|record|struct|interface|enum)\s+(?:struct\s+|class\s+)?(\w+)",
                         RegexOptions.Multiline))
                declared.TryAdd(m.Groups[1].Value, file.Namespace);

        var graph = new Dictionary<string, Dictionary<string, string>>();
        foreach (var file in Sources.Value)
        {
            var edges = graph.TryGetValue(file.Namespace, out var e) ? e : graph[file.Namespace] = [];
            foreach (Match word in Regex.Matches(file.Code, @"\b[A-Z]\w*\b"))
                if (declared.TryGetValue(word.Value, out var target) && target != file.Namespace)
                    edges.TryAdd(target, $"{Path.GetFileName(file.Path)}: {word.Value}");
        }
        return graph;
    }

    [Fact]
    public void EveryLayerNamesOnlyTheLayersBeforeIt()
    {
        var graph = NamespaceGraph();
        // The reader must see the graph, or the test passes on nothing: Sampling uses Model, Alignment uses Sampling.
        Assert.Contains("OnnxAlign.Model", graph["OnnxAlign.Sampling"].Keys);
        Assert.Contains("OnnxAlign.Sampling", graph["OnnxAlign.Alignment"].Keys);

        var violations = new List<string>();
        foreach (var (from, edges) in graph)
        {
            string layer = LayerOf(from);
            foreach (var (to, example) in edges)
            {
                string used = LayerOf(to);
                if (used == layer) continue;   // within a layer (Alignment and Alignment.Prox): the cycle test covers it
                bool allowed = NarrowerRows.TryGetValue(layer, out var row)
                    ? row.Contains(used)
                    : Array.IndexOf(LayerOrder, used) < Array.IndexOf(LayerOrder, layer);
                if (!allowed) violations.Add($"{from} → {to} ({example})");
            }
        }
        Assert.True(violations.Count == 0, "layer violations (DESIGN §6):\n" + string.Join("\n", violations));
    }

    [Fact]
    public void TheNamespaceGraphHasNoCycle()
    {
        var graph = NamespaceGraph();
        var state = new Dictionary<string, int>();   // 1: on the path, 2: done
        var path = new Stack<string>();
        string? cycle = null;

        void Visit(string ns)
        {
            state[ns] = 1;
            path.Push(ns);
            foreach (var next in graph.TryGetValue(ns, out var e) ? e.Keys.ToArray() : [])
            {
                if (cycle is not null) return;
                if (state.GetValueOrDefault(next) == 1)
                    cycle = string.Join(" → ", path.Reverse().SkipWhile(n => n != next).Append(next));
                else if (state.GetValueOrDefault(next) == 0) Visit(next);
            }
            path.Pop();
            state[ns] = 2;
        }

        foreach (var ns in graph.Keys)
            if (state.GetValueOrDefault(ns) == 0 && cycle is null) Visit(ns);
        Assert.True(cycle is null, $"namespace cycle: {cycle}");
    }

    [Fact]
    public void NoLibraryMessageNamesACommandLineFlag()
    {
        var offenders = new List<string>();
        foreach (var file in Sources.Value)
        {
            string code = Regex.Replace(file.Text, @"//[^\n]*", "");   // comments may cite the CLI; messages may not
            foreach (Match literal in Regex.Matches(code, @"\$?@?""(?:\\.|[^""\\])*"""))
                if (Regex.IsMatch(literal.Value, @"(?<![\w-])--[a-z][a-z-]*"))
                    offenders.Add($"{Path.GetFileName(file.Path)}: {literal.Value}");
        }
        Assert.True(offenders.Count == 0, "library strings that name CLI flags (throw with the parameter instead):\n" + string.Join("\n", offenders));
    }

    [Fact]
    public void TheScanSeesAFlagWhenThereIsOne()
    {
        // The flag scan's pattern, on a literal it must catch and on ones it must let through.
        const string pattern = @"(?<![\w-])--[a-z][a-z-]*";
        Assert.Matches(pattern, "\"--reward 'x': unknown\"");
        Assert.DoesNotMatch(pattern, "\"x--y\"");
        Assert.DoesNotMatch(pattern, "\"reward 'x': unknown\"");
    }

    [Fact]
    public void TheCliSaysTheLibrarysParameterAsItsFlag()
    {
        var e = ConfigException.For("outputDirectory", $"out/: already holds a run (report.json); pass {OnnxAlignException.Option("overwrite")} or choose another folder");
        Assert.Equal("outputDirectory out/: already holds a run (report.json); pass option 'overwrite' or choose another folder", e.Message);
        Assert.Equal("--out out/: already holds a run (report.json); pass --overwrite or choose another folder", Cli.Flags.Describe(e));
        var unknown = ConfigException.For("notAFlag", "'x': bad");
        Assert.Equal("notAFlag 'x': bad", Cli.Flags.Describe(unknown));   // no flag: the library's words stay
    }
}
